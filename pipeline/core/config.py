"""Typed, frozen experiment configuration loaded from YAML with inheritance and overrides.

A YAML file may start with `base: other.yaml` (a path relative to the file): the base
is loaded first and the file lists only what differs. Overrides are `section.key=value`
strings typed like the field (`--set optim.lr=0.5`). OmegaConf structured configs do the
merging and type checks; ranges and choices are checked in `__post_init__`. Every error
is a `ConfigError` that names the key, the value and, for a typo, the closest valid key.
"""

import dataclasses
import difflib
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from pipeline.core import footprint
from pipeline.core.errors import ConfigError  # also imported from here, as it always was
from pipeline.core.user_code import split_function_path
from pipeline.core.yaml_files import read_yaml_chain

DATASETS = ("cifar10", "cifar100", "digits", "synthetic", "linear_regression")
SOURCES = ("tfds", "binary")
# The built-in model families (pipeline.nets.families registers each, and checks at import
# that it registers exactly these); a user's network is `model.factory` instead.
FAMILIES = ("dln", "mlp", "resnet", "vgg")
# The model layer's registries, by name (pipeline.nets.layers.NORM_LAYERS, pipeline.nets.models),
# which check at import that they build exactly these.
NORMS = ("batch", "group", "l1", "l2", "layer", "linf", "noise_only", "noisy_batch", "none")
HEADS = ("linear", "mlp")
VGG_DEPTHS = (11, 13, 16, 19)
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
BN_STATISTICS = ("recomputed", "moving")
AUTO = "auto"  # a setting resolved per device when the run starts (pipeline.training.runtime)


def _choice(key, value, choices):
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(map(str, choices))}")


def _auto_or_bool(key, value):
    if value != AUTO and not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is not valid; choose one of: auto, true, false")


def _at_least(key, value, low):
    if value is not None and value < low:
        raise ConfigError(f"{key}={value!r} is out of range; it must be >= {low}")


@dataclass(frozen=True)
class DataConfig:
    name: str = "cifar10"
    source: str = "tfds"            # cifar only: tensorflow-datasets or the binary archive
    data_dir: Optional[str] = None  # tfds data_dir, or the archive file / its folder
    download: bool = True           # tfds may download when the data is not in data_dir
    batch_size: int = 128           # global batch, split across replicas
    eval_batch_size: int = 500
    n_train: Optional[int] = None   # use only the first n_train training examples
    n_test: Optional[int] = None
    augment: bool = False           # 4-pixel pad + random crop + flip; off in the paper
    standardize: bool = True        # per-channel, with training-set statistics
    seed: int = 0                   # seed of the data set itself (synthetic, A, digits split)
    synthetic_train_size: int = 5000
    synthetic_test_size: int = 1000
    regression_dim: int = 10        # DLN: x in R^dim, A is dim x dim
    regression_train_size: int = 1000
    regression_test_size: int = 1000
    # DLN: targets A x with A_ij ~ N(0, scale^2); configs/dln.yaml sets the scale that
    # gives the paper's initial loss (PROTOCOL.md section 1)
    regression_target_scale: float = 1.0
    # A user's data set, "package.module:function" (pipeline.inputs.data.load_user_arrays
    # says what it returns); when set it replaces data.name's data set.
    loader: Optional[str] = None

    def __post_init__(self):
        if self.loader is not None:
            split_function_path("data.loader", self.loader)
        _choice("data.name", self.name, DATASETS)
        _choice("data.source", self.source, SOURCES)
        for key in ("batch_size", "eval_batch_size", "n_train", "n_test",
                    "synthetic_train_size", "synthetic_test_size", "regression_dim",
                    "regression_train_size", "regression_test_size"):
            _at_least(f"data.{key}", getattr(self, key), 1)
        if not self.regression_target_scale > 0 or self.regression_target_scale == float("inf"):
            raise ConfigError(f"data.regression_target_scale={self.regression_target_scale!r} "
                              "must be a positive finite number")


@dataclass(frozen=True)
class NoiseConfig:
    """Algorithm-1 constants (paper values)."""
    n_mu: float = 0.5
    n_sigma: float = 1.25
    r_mu: float = 0.1
    r_sigma: float = 0.1
    # PROTOCOL.md section 2 [D]: noise only in training mode. With it, evaluation runs a
    # network whose later BN moving statistics were averaged over noisy steps.
    at_inference: bool = False

    def __post_init__(self):
        for key in ("n_mu", "r_mu", "r_sigma"):
            _at_least(f"model.noise.{key}", getattr(self, key), 0.0)
        _at_least("model.noise.n_sigma", self.n_sigma, 1.0)


@dataclass(frozen=True)
class ModelConfig:
    family: str = "vgg"
    depth: int = 16                 # VGG 11/13/16/19; DLN number of layers
    norm: str = "batch"
    width_multiplier: float = 1.0   # VGG channels x this; the DLN's width is data.regression_dim
    head: str = "linear"
    hidden_units: int = 512
    sync_batch_norm: bool = False   # all-reduce BN statistics across replicas
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    # A user's network, "package.module:function" (pipeline.nets.families says what it is
    # called with); when set it replaces model.family's network.
    factory: Optional[str] = None

    def __post_init__(self):
        if self.factory is not None:
            split_function_path("model.factory", self.factory)
        _choice("model.family", self.family, FAMILIES)
        _choice("model.norm", self.norm, NORMS)
        _choice("model.head", self.head, HEADS)
        family = None if self.factory else self.family  # a factory reads its own depth
        if family == "vgg":
            _choice("model.depth", self.depth, VGG_DEPTHS)
        if family == "resnet" and (self.depth < 8 or (self.depth - 2) % 6):
            raise ConfigError(f"model.depth={self.depth!r} is not a CIFAR ResNet's depth; it is "
                              "6n + 2 (20, 32, 44, 56, 110)")
        _at_least("model.depth", self.depth, 1)
        if self.width_multiplier <= 0:
            raise ConfigError(f"model.width_multiplier={self.width_multiplier!r} must be > 0")
        _at_least("model.hidden_units", self.hidden_units, 1)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 0.1
    momentum: float = 0.0           # plain SGD in the paper
    weight_decay: float = 0.0

    def __post_init__(self):
        if not self.lr > 0:
            raise ConfigError(f"optim.lr={self.lr!r} must be > 0")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"optim.momentum={self.momentum!r} must be in [0, 1)")
        _at_least("optim.weight_decay", self.weight_decay, 0.0)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 15000
    log_every: int = 100            # train metrics on the current batch
    eval_every: int = 1000          # test metrics on the whole test split
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    strategy: str = "auto"
    precision: str = "float32"
    # Training steps per compiled call: "auto" (calls of about a second) or a whole number.
    # Records are the same for any value; calls also end where probes, evaluations and
    # checkpoints are due.
    steps_per_call: Any = AUTO
    # auto: off on a CPU (XLA's CPU step is the slower one there; `make bench` shows it),
    # on with a GPU or TPU unless train.deterministic=true.
    xla: Any = AUTO
    # TF op determinism, same seed -> same bits. auto: on for a CPU, off (faster kernels)
    # with a GPU or TPU.
    deterministic: Any = AUTO
    # Intra-op threads of one run. On a CPU the thread count changes the numerics (how
    # reductions are split), so it is part of the run, never taken from how it was
    # launched: auto = 1 on a CPU (a sweep runs one run per core, `sweep --jobs`), the
    # framework's default on a GPU or TPU; 0 = the framework's default (all cores).
    threads: Any = AUTO
    progress: bool = True

    def __post_init__(self):
        for key in ("steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
            _at_least(f"train.{key}", getattr(self, key), 1)
        _choice("train.strategy", self.strategy, STRATEGIES)
        _choice("train.precision", self.precision, PRECISIONS)
        _auto_or_bool("train.xla", self.xla)
        _auto_or_bool("train.deterministic", self.deterministic)
        if self.threads != AUTO and (isinstance(self.threads, bool) or not isinstance(
                self.threads, int) or self.threads < 0):
            raise ConfigError(f"train.threads={self.threads!r} is not valid; use auto, 0 (the "
                              "framework's default) or a whole number of threads")
        if self.steps_per_call != AUTO and (isinstance(self.steps_per_call, bool) or not isinstance(
                self.steps_per_call, int) or self.steps_per_call < 1):
            raise ConfigError(f"train.steps_per_call={self.steps_per_call!r} is not valid; "
                              "use auto or a whole number >= 1")
        if self.xla is True and self.deterministic is True:
            raise ConfigError("train.xla=true needs train.deterministic=false (or auto): XLA has "
                              "no deterministic max-pool gradient")


@dataclass(frozen=True)
class EvalConfig:
    """PROTOCOL.md section 2 [D]: evaluate with BN-family statistics recomputed as the
    plain average of batch statistics over `bn_batches` fixed training batches (noise
    off; PreciseBN), or with the moving averages collected in training."""
    bn_statistics: str = "recomputed"
    bn_batches: int = 20

    def __post_init__(self):
        _choice("eval.bn_statistics", self.bn_statistics, BN_STATISTICS)
        _at_least("eval.bn_batches", self.bn_batches, 1)


def _probes_config():
    """`ProbesConfig`: one field per probe (pipeline.core.probe_settings), typed by its
    settings class."""
    from pipeline.core.probe_settings import SCHEDULES, SETTINGS

    def check(self):
        for name in SETTINGS:
            probe = getattr(self, name)
            _at_least(f"probes.{name}.every", probe.every, 1)
            _choice(f"probes.{name}.schedule", probe.schedule, SCHEDULES)
            _at_least(f"probes.{name}.per_decade", probe.per_decade, 1)
        _at_least("probes.curvature.iterations", self.curvature.iterations, 1)
        if self.curvature.iterations > MAX_CURVATURE_ITERATIONS:
            raise ConfigError(f"probes.curvature.iterations={self.curvature.iterations} is "
                              f"beyond the stated maximum of {MAX_CURVATURE_ITERATIONS} (each is a "
                              "Hessian-vector product, ~2.5 training steps; 20 reach 1e-3)")
        _at_least("probes.distributions.sample_size", self.distributions.sample_size, 1)
        if self.distributions.sample_size > MAX_SAMPLE_SIZE:
            raise ConfigError(f"probes.distributions.sample_size={self.distributions.sample_size} "
                              f"is beyond the stated maximum of {MAX_SAMPLE_SIZE:,} values a "
                              "layer a record")
        for name in ("ics", "distributions"):
            for layer in getattr(self, name).layers or ():
                if not (isinstance(layer, int) and not isinstance(layer, bool) and layer >= 1):
                    raise ConfigError(f"probes.{name}.layers holds {layer!r}; each is a weight "
                                      "layer's number, a whole number >= 1 (e.g. [5, 10])")
        for multiplier in self.landscape.multipliers or ():
            if not isinstance(multiplier, (int, float)) or isinstance(multiplier, bool):
                raise ConfigError(f"probes.landscape.multipliers holds {multiplier!r}; each is "
                                  "a number, a multiple of optim.lr (e.g. [0.5, 1, 2, 4])")
            if not multiplier > 0:
                raise ConfigError(f"probes.landscape.multipliers holds {multiplier!r}; every "
                                  "step size is a positive multiple of optim.lr (a step of 0 "
                                  "or against the gradient measures nothing of the claims)")
        if not 0 <= self.curvature.tolerance < 1:
            raise ConfigError(f"probes.curvature.tolerance={self.curvature.tolerance!r} is out "
                              "of range; it must be in [0, 1) (0: always run every iteration)")
    fields = [(name, settings, field(default_factory=settings))
              for name, settings in SETTINGS.items()]
    return dataclasses.make_dataclass("ProbesConfig", fields, frozen=True,
                                      namespace={"__post_init__": check,
                                                 "__module__": __name__})


ProbesConfig = _probes_config()


@dataclass(frozen=True)
class Config:
    description: str = ""
    seed: int = 0                   # init, data order, noise, augmentation
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    probes: ProbesConfig = field(default_factory=ProbesConfig)

    def __post_init__(self):
        for key, value in _floats(self):
            if not math.isfinite(value):
                raise ConfigError(f"{key}={value!r} is not a finite number; give a finite value "
                                  "(the default is in the config's section of configs/base.yaml "
                                  "or PROTOCOL.md)")
            if footprint.not_float32(value):
                raise ConfigError(f"{key}={value!r} {footprint.not_float32(value)}")
        for key, value in (("seed", self.seed), ("data.seed", self.data.seed)):
            if not 0 <= value < 2 ** 32:
                raise ConfigError(f"{key}={value!r} is out of range; it must be between 0 and "
                                  "2**32 - 1")
        regression = self.data.name == "linear_regression"
        fits = {"dln": regression, "vgg": not regression, "resnet": not regression}
        if not (self.model.factory or self.data.loader) and not fits.get(self.model.family, True):
            raise ConfigError(
                f"model.family={self.model.family!r} does not fit data.name={self.data.name!r}: "
                "the DLN trains on linear_regression, VGG and the ResNet on image data sets")
        too_large = footprint.too_large(self)  # before a model is built, not by the kernel
        if too_large:
            raise ConfigError(too_large)


def _floats(node, prefix=""):
    """(dotted key, value) of every float in a config dataclass, nested sections and
    lists included: a NaN or infinite value passes every range check (comparisons with
    NaN are false), so each is checked once here, before anything runs."""
    for item in dataclasses.fields(node):
        key, value = prefix + item.name, getattr(node, item.name)
        if dataclasses.is_dataclass(value):
            yield from _floats(value, key + ".")
        elif isinstance(value, float):
            yield key, value
        elif isinstance(value, (list, tuple)):
            yield from ((key, v) for v in value if isinstance(v, float))


def _valid_keys(node, prefix=""):
    keys = []
    for key, value in node.items():
        keys.append(prefix + key)
        if dataclasses.is_dataclass(value):
            keys += _valid_keys(dataclasses.asdict(value), prefix + key + ".")
        elif isinstance(value, dict):
            keys += _valid_keys(value, prefix + key + ".")
    return keys


def _explain(error, key=None):
    """Turn an OmegaConf error into a ConfigError naming the closest valid key."""
    key = key or getattr(error, "full_key", None) or ""
    message = str(error).split("\n")[0]
    if isinstance(error, ConfigKeyError) and key:
        close = difflib.get_close_matches(key, _valid_keys(dataclasses.asdict(Config())), n=1,
                                          cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return ConfigError(f"unknown config key {key!r}{hint}")
    return ConfigError(f"{key}: {message}" if key else message)


# Stated maxima of the probes' work per record.
MAX_CURVATURE_ITERATIONS = 1000
MAX_SAMPLE_SIZE = 1_000_000


def build_config(layers=(), overrides=()):
    """Merge mappings (`layers`, lowest first) and dotted overrides into a `Config`."""
    parsed = [_parse_override(item) for item in overrides]
    schema = _schema()
    try:
        try:
            # All in one merge: OmegaConf.merge deep-copies the whole config each time,
            # and one merge per layer and override took 0.1 s a config (7 s to plan the
            # demo's 64 runs).
            merged = OmegaConf.merge(schema, *[data for _, data in layers], *parsed)
        except (OmegaConfBaseException, TypeError):  # TypeError: a mapping for a list
            merged = _merge_naming_the_source(schema, layers, overrides, parsed)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise _explain(error) from None


@functools.cache
def _schema():
    """The structured config of the defaults, built once (~60 ms): each merge copies it,
    and nothing changes it in place."""
    return OmegaConf.structured(Config)


def _parse_override(item):
    """`section.key=value` as a config fragment; a `ConfigError` naming the override if
    it is not of that form or its value is not YAML."""
    key, equals, value = item.partition("=")
    if not equals or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    if not value.strip():
        raise ConfigError(f"override {item!r} gives no value; write one after '=' "
                          "(quote it if it is empty text: key='')")
    try:
        return OmegaConf.from_dotlist([item])
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem}); "
                          "quote it if it is text, e.g. key='...'") from None


def _merge_naming_the_source(schema, layers, overrides, parsed):
    """The merge again one source at a time, to name the file or override it stopped on."""
    merged = schema
    for source, data in layers:
        try:
            merged = OmegaConf.merge(merged, data)
        except TypeError as error:
            raise ConfigError(f"{source}: a value has the wrong shape ({error}: a mapping where "
                              "a list or a number belongs?)") from None
        except OmegaConfBaseException as error:
            raise ConfigError(f"{source}: {_explain(error)}") from None
    for item, fragment in zip(overrides, parsed):
        try:
            merged = OmegaConf.merge(merged, fragment)
        except TypeError as error:
            raise ConfigError(f"override {item!r}: the value has the wrong shape ({error}: a "
                              "mapping where a list or a number belongs?)") from None
        except OmegaConfBaseException as error:
            # Name the whole dotted key: OmegaConf reports only its first unknown part.
            explained = _explain(error, item.partition("=")[0].strip())
            raise ConfigError(f"override {item!r}: {explained}") from None
    return merged


# BN Lab's own configs, found by name from any folder (`train your_model.yaml`).
SHIPPED_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def find_config(path):
    """`path`, or where it is a bare file name that is not in the working folder, BN Lab's
    config of that name (configs/), so a run started in a user's own folder can name
    one; `path` unchanged if neither exists (the reader names it)."""
    path = Path(path)
    shipped = SHIPPED_CONFIGS / path.name
    if not path.exists() and path.name == str(path) and shipped.is_file():
        return shipped
    return path


def load_config(path=None, overrides=()):
    """Load a YAML file (with its `base:` chain; a bare name may be one of BN Lab's
    configs, `find_config`) and apply `section.key=value` overrides."""
    layers = read_yaml_chain(find_config(path)) if path else []
    return build_config(layers, overrides)


def to_yaml(config):
    """The resolved config as YAML, loadable again with `load_config`."""
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)
