"""Reading the YAML of config files and sweep plans strictly: a key given twice, a key
that is not a plain name, aliases, nesting beyond `MAX_YAML_DEPTH` and `base:` chains
beyond `MAX_BASE_CHAIN` are each refused with one line naming the file (never a
RecursionError), and a file that is not UTF-8 is named."""

from pathlib import Path

import yaml

from pipeline.core.errors import ConfigError, file_kind

# Limits of what a config file may hold (refused with one line, never a RecursionError):
# levels of nesting, and files in a `base:` chain.
MAX_YAML_DEPTH = 32
MAX_BASE_CHAIN = 32


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the
    last one silently: a second `train:` section would replace the first whole), a key
    that is not a plain value, and aliases (`*name`): a recursive alias never ends and an
    alias of aliases grows without limit; configs inherit with `base:` instead."""

    def compose_node(self, parent, index):
        # Nesting deeper than any config has is refused before it reaches Python's
        # recursion limit (the composer recurses once a level).
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"values are nested more than {MAX_YAML_DEPTH} levels deep; a "
                    "config has sections of values, and lists of numbers",
                    self.peek_event().start_mark)
            return self._compose_node(parent, index)
        finally:
            self._depth -= 1

    def _compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not read in these files: write the values "
                "out (a config can inherit another with 'base:')", self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        lines = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key must be a plain name, not {type(key).__name__} "
                    f"(line {key_node.start_mark.line + 1})", key_node.start_mark)
            line = key_node.start_mark.line + 1
            if key in lines:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (lines {lines[key]} and {line}); "
                    "keep one", key_node.start_mark)
            lines[key] = line
        return super().construct_mapping(node, deep)


def read_yaml_file(path, what="config file"):
    """The YAML document in `path`; a `ConfigError` naming the file if it is missing, not
    UTF-8, not YAML, or gives a key twice."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} not found: {path}")
    if not path.is_file():
        raise ConfigError(f"{what} {path} is {file_kind(path)}; expected a regular file: "
                          "give the YAML file itself")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); "
                          "save it as UTF-8") from None
    except yaml.constructor.ConstructorError as error:
        raise ConfigError(f"{path}: {error.problem}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None


def read_yaml_chain(path, seen=()):
    """[(path, mapping), ...] of the file at `path` and its `base:` files, base first."""
    path = Path(path).resolve()
    if path in seen:
        raise ConfigError(f"config inheritance loops back to {path}")
    if len(seen) >= MAX_BASE_CHAIN:
        raise ConfigError(f"{path}: the 'base:' chain is longer than {MAX_BASE_CHAIN} files "
                          f"(from {seen[0]}); inherit from fewer files")
    data = read_yaml_file(path)
    if data is None:
        raise ConfigError(f"{path} is empty; write the settings that differ from a base "
                          "(see configs/cpu.yaml), starting with e.g. 'base: base.yaml'")
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, not {type(data).__name__}")
    base = data.pop("base", None)
    if base is not None and (not isinstance(base, str) or not base.strip()):
        raise ConfigError(f"{path}: base={base!r} must be one file name, e.g. base: base.yaml")
    layers = read_yaml_chain(path.parent / base, seen + (path,)) if base else []
    return layers + [(path, data)]
