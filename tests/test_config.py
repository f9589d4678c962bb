"""Typed configs: shipped files, inheritance, overrides and every error path."""

import dataclasses

import pytest

from conftest import REPO, SMOKE, call_cli
from pipeline.core.config import Config, ConfigError, load_config, to_yaml

pytestmark = pytest.mark.backend_free  # trains nothing: run once, in the JAX pass

# Sweep plans (*_plan.yaml) list runs of these configs; tests/test_sweep.py checks them.
CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml") if not p.stem.endswith("_plan"))


def _split_header(path):
    """(leading comment block, the YAML after it)."""
    lines = path.read_text().splitlines()
    count = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    return "\n".join(lines[:count]), "\n".join(lines[count:])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_documents_itself(path):
    config = load_config(path)
    assert isinstance(config, Config)
    header = _split_header(path)[0]
    assert "python -m pipeline" in header and "Runtime" in header and "Expected" in header


def test_variants_inherit_the_paper_settings_and_list_only_differences():
    standard = load_config(REPO / "configs" / "vgg_none.yaml")
    assert standard.model.norm == "none"
    assert (standard.optim.lr, standard.data.batch_size, standard.train.steps) == (0.1, 128, 15000)
    assert standard.data.name == "cifar10" and standard.data.augment is False
    dln = load_config(REPO / "configs" / "dln_l1.yaml")
    assert (dln.model.family, dln.model.norm, dln.model.depth, dln.optim.lr) == ("dln", "l1", 25, 1e-6)
    assert "steps" not in _split_header(REPO / "configs" / "vgg_none.yaml")[1]


def test_overrides_are_typed_like_the_field():
    config = load_config(SMOKE, ["optim.lr=0.5", "train.steps=7", "model.noise.n_mu=0.25",
                                 "probes.ics.layers=[5,10]", "data.augment=true"])
    assert config.optim.lr == 0.5 and isinstance(config.optim.lr, float)
    assert config.train.steps == 7 and config.model.noise.n_mu == 0.25
    assert config.probes.ics.layers == [5, 10] and config.data.augment is True
    assert dataclasses.is_dataclass(config) and load_config(SMOKE) == load_config(SMOKE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 3


def test_resolved_yaml_loads_back_to_the_same_config(tmp_path):
    config = load_config(SMOKE, ["optim.lr=0.5", "probes.ics.layers=[5]"])
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(config))
    assert load_config(path) == config


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=0.5", "unknown config key 'optim.lrr'; did you mean 'optim.lr'"),
    ("modle.norm=batch", "did you mean 'model.norm'"),
    ("optim.lr=fast", "optim.lr: Value 'fast'"),
    ("train.steps=1.5", "train.steps: Value '1.5'"),
    ("optim.lr=-0.1", "optim.lr=-0.1 must be > 0"),
    ("train.steps=0", "train.steps=0 is out of range"),
    ("model.norm=bn", "model.norm='bn' is not valid; choose one of: batch"),
    ("data.name=imagenet", "data.name='imagenet' is not valid"),
    ("model.depth=12", "model.depth=12 is not valid"),
    ("model.noise.n_sigma=0.5", "model.noise.n_sigma=0.5 is out of range"),
    ("model.family=dln", "does not fit data.name"),
    ("optim.lr", "must look like section.key=value"),
    ("train.xla=maybe", "train.xla='maybe' is not valid; choose one of: auto, true, false"),
    ("train.steps_per_call=0", "train.steps_per_call=0 is not valid; use auto or a whole number"),
    ("train.steps_per_call=fast", "train.steps_per_call='fast' is not valid"),
    # Non-finite values pass every range comparison; each is refused by name.
    ("optim.lr=inf", "optim.lr=inf is not a finite number"),
    ("optim.weight_decay=nan", "optim.weight_decay=nan is not a finite number"),
    ("model.noise.n_mu=nan", "model.noise.n_mu=nan is not a finite number"),
    ("model.width_multiplier=inf", "model.width_multiplier=inf is not a finite number"),
    ("model.width_multiplier=nan", "model.width_multiplier=nan is not a finite number"),
    ("probes.landscape.multipliers=[1,.inf]", "probes.landscape.multipliers=inf is not a finite"),
    ("probes.curvature.tolerance=2", "probes.curvature.tolerance=2.0 is out of range"),
    ("data.regression_target_scale=0", "data.regression_target_scale=0.0 must be a positive"),
    # Finite in YAML, but 0 or inf in float32, the precision runs compute in.
    ("optim.lr=1e-50", "optim.lr=1e-50 is not representable in float32"),
    ("model.noise.n_sigma=1e308", "model.noise.n_sigma=1e.308 is not representable in float32"),
    ("probes.landscape.multipliers=[1,1e-45]", "probes.landscape.multipliers=1e-45 is not representable"),
    ("probes.landscape.multipliers=[1,0]", "probes.landscape.multipliers holds 0.0; every step size is a positive"),
    ("probes.landscape.multipliers=[-1]", "probes.landscape.multipliers holds -1.0"),
    # Shapes and sizes that used to pass validation and fail mid-run (issue 41).
    ("probes.distributions.sample_size=-1", "probes.distributions.sample_size=-1 is out of range"),
    ("probes.ics.layers=[1,[2]]", "probes.ics.layers holds [2]; each is a weight layer's number"),
    ("probes.ics.layers=[0]", "probes.ics.layers holds 0"),
    ("probes.landscape.multipliers=[1,[2]]", "probes.landscape.multipliers holds [2]; each is a number"),
    ("probes.ics.layers={a: 1}", "override 'probes.ics.layers={a: 1}': the value has the wrong shape"),
    ("probes.curvature.iterations=1000000", "beyond the stated maximum of 1000"),
    ("model.width_multiplier=1e308", "model.width_multiplier=1e.308 is not representable in float32"),
    # Too large for this machine: refused with the estimate and the limit, before anything
    # is built (the attack's width multiplier of 200 was killed by the kernel after 104 s).
    ("model.width_multiplier=200", "this run needs at least ~5,515.6 GiB"),
])
def test_bad_values_fail_naming_key_value_and_fix(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", "\\(").replace("[", "\\[")):
        load_config(SMOKE, [override])


def test_bad_yaml_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {SMOKE}\noptim:\n  momentun: 0.9\n")
    with pytest.raises(ConfigError, match="bad.yaml.*'optim.momentun'.*'optim.momentum'"):
        load_config(bad)
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(loop)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_cli_rejects_a_bad_config_before_writing_anything(tmp_path):
    workdir = tmp_path / "run"
    result = call_cli("train", SMOKE, "--set", "optim.lr=abc", "--workdir", workdir, check=False)
    assert result.returncode == 2
    assert "optim.lr" in result.stderr and "abc" in result.stderr
    assert not workdir.exists()


def test_xla_and_determinism_resolve_per_device_and_conflict_only_when_both_forced():
    from pipeline.training.runtime import resolve_runtime
    with pytest.raises(ConfigError, match="train.xla=true needs train.deterministic=false"):
        load_config(SMOKE, ["train.xla=true", "train.deterministic=true"])

    def resolved(*overrides, accelerator, backend="tensorflow"):
        runtime = resolve_runtime(load_config(SMOKE, list(overrides)).train, accelerator,
                                  backend)
        return runtime.xla, runtime.deterministic
    # JAX compiles every step with XLA, bit-exact on a CPU.
    assert resolved(accelerator="cpu", backend="jax") == (True, True)
    # TensorFlow, auto: bit-exact and XLA off on a CPU, speed first on a GPU or TPU.
    assert resolved(accelerator="cpu") == (False, True)
    assert resolved(accelerator="gpu") == (True, False)
    assert resolved(accelerator="tpu") == (True, False)
    # What the user forces wins, and the other setting follows it.
    assert resolved("train.deterministic=true", accelerator="gpu") == (False, True)
    assert resolved("train.xla=true", accelerator="cpu") == (True, False)
    assert resolved("train.xla=false", accelerator="gpu") == (False, False)
    assert load_config(SMOKE, ["train.steps_per_call=5"]).train.steps_per_call == 5


@pytest.mark.parametrize("override, message", [
    ("optim.lr=[1", "override 'optim.lr=\\[1': the value is not valid YAML"),
    ("description=...", "the value is not valid YAML"),
    ("optim.lr=*x", "the value is not valid YAML \\(found undefined alias\\)"),
    ("optim.lr=%TAG", "the value is not valid YAML"),
    ("=5", "override '=5' must look like section.key=value"),
    ("optim.lr=", "override 'optim.lr=' gives no value"),
])
def test_override_values_that_do_not_parse_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(SMOKE, [override])


@pytest.mark.parametrize("text, message", [
    ("[1, 2]: x\n", "a key must be a plain name, not list"),
    ("? {a: 1}\n: x\n", "a key must be a plain name, not dict"),
    ("a: &x [*x]\n", "aliases \\(\\*name\\) are not read"),            # recursive: no end
    ("a: &a [1, 1, 1]\nb: [*a, *a, *a]\n", "aliases \\(\\*name\\) are not read"),  # a bomb's seed
    ("base: ''\n", "base='' must be one file name"),
])
def test_config_files_that_cannot_be_read_as_settings_are_named(text, message, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_folder_a_device_or_a_fifo_as_the_config_is_named_for_what_it_is(tmp_path):
    import os
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)  # opening it to read would wait forever for a writer
    for path, kind in ((tmp_path, "a folder"), ("/dev/null", "a character device"),
                       (fifo, "a FIFO")):
        with pytest.raises(ConfigError, match=f"is {kind}.*; expected a regular file"):
            load_config(path)


def test_nesting_and_base_chains_beyond_their_limits_are_refused_in_one_line(tmp_path):
    deep_list = tmp_path / "list.yaml"
    deep_list.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    deep_map = tmp_path / "map.yaml"
    deep_map.write_text("a: " + "{a: " * 30000 + "1" + "}" * 30000 + "\n")
    for path in (deep_list, deep_map):
        with pytest.raises(ConfigError, match="nested more than 32 levels deep"):
            load_config(path)
    chain = [tmp_path / f"c{k}.yaml" for k in range(1500)]
    for k, path in enumerate(chain):
        path.write_text(f"base: c{k + 1}.yaml\n" if k + 1 < len(chain) else "seed: 1\n")
    with pytest.raises(ConfigError, match="chain is longer than 32 files"):
        load_config(chain[0])


def test_a_dln_too_large_for_memory_is_refused_with_the_figure_and_the_limit():
    with pytest.raises(ConfigError, match=r"needs at least ~3,782.7 GiB .* more than 80% of "
                       r"this machine's [\d.,]+ GiB; make the model or batch smaller"):
        load_config(REPO / "configs" / "dln.yaml", ["data.regression_dim=100000"])
