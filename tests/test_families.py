"""Every registered model family honours the contract the paper's networks do (as Keras'
`run_layer_test` does for layers): it builds from its config, trains a few steps with
every probe, resumes after an interruption with the records of an uninterrupted run,
evaluates, and its runs are read by the claims and drawn by the plots."""

import json

import numpy as np
import pytest

from conftest import SMOKE
from pipeline.core.config import load_config
from pipeline.core.records import STREAMS
from pipeline.core.runs import RunDirectory, load_run
from pipeline.nets.families import built_in_families
from pipeline.probes import make_probes
from pipeline.training.train import train_and_evaluate

# Each family at a size that trains in seconds; with BN, so that a resume must restore
# the moving statistics and evaluation recomputes them (a noisy BN run's resume, its
# random state too, is tested on the paper's networks: test_train.py, test_faults.py).
FAMILY_SETTINGS = {
    "vgg": ["model.depth=11", "model.width_multiplier=0.0625"],
    "dln": ["model.family=dln", "model.depth=25", "data.name=linear_regression",
            "data.regression_train_size=64", "data.regression_test_size=32", "optim.lr=1e-4"],
    "resnet": ["model.family=resnet", "model.depth=20", "model.width_multiplier=0.125"],
    "mlp": ["model.family=mlp", "model.depth=4", "model.hidden_units=16"],
}
EVERY_PROBE = [f"probes.{name}.{key}" for name in ("ics", "landscape", "distributions", "curvature")
               for key in ("enabled=true", "every=3")] + [
    "probes.ics.layers=null", "probes.distributions.layers=null",  # the family's defaults
    "probes.curvature.iterations=3", "probes.distributions.sample_size=16"]
COMMON = ["model.norm=batch", "train.steps=6", "train.log_every=1", "train.eval_every=3",
          "train.checkpoint_every=3", *EVERY_PROBE]


class _InterruptedAt:
    """A probe that stops the run (Ctrl-C) when it is next due at `step`."""

    def __init__(self, probe, step):
        self.probe, self.step = probe, step
        self.name, self.schedule = probe.name, probe.schedule

    def __call__(self, step):
        if step == self.step:
            raise KeyboardInterrupt
        return self.probe(step)


def _records(path):
    run = RunDirectory(path)
    return {stream: [json.dumps(r, sort_keys=True) for r in run.records(stream)]
            for stream in STREAMS if run.records_path(stream).exists()}


@pytest.mark.both_backends
@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILY_SETTINGS))
def test_every_registered_family_trains_probes_resumes_evaluates_and_is_read(family, tmp_path):
    assert set(FAMILY_SETTINGS) == set(built_in_families())  # every family is in this test
    from pipeline import engines
    if engines.backend_in_use() == "jax":
        # As a sweep's worker does: the interrupted and resumed runs reuse the programs
        # the first run compiled (the same records to the byte, tests/test_sweep.py),
        # rather than compiling a ResNet's probes three times over.
        engines.module("engine").reuse_programs()
    config = load_config(SMOKE, COMMON + FAMILY_SETTINGS[family])
    straight = train_and_evaluate(config, tmp_path / "straight", probes_factory=make_probes)
    assert straight.status == "finished"

    def interrupted(*args):
        return [_InterruptedAt(probe, 3) for probe in make_probes(*args)]
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(config, tmp_path / "resumed", probes_factory=interrupted)
    assert RunDirectory(tmp_path / "resumed").read_meta().status == "interrupted"
    resumed = train_and_evaluate(config, tmp_path / "resumed", probes_factory=make_probes)
    assert resumed.status == "finished" and resumed.start_step == 3
    records = _records(tmp_path / "straight")
    assert set(records) == {"train", "eval", "ics", "landscape", "distributions", "curvature"}
    assert records == _records(tmp_path / "resumed")  # byte for byte, every stream

    run = load_run(tmp_path / "straight")  # read as claims and figures read it
    assert [r["step"] for r in RunDirectory(tmp_path / "straight").records("eval")] == [3, 6]
    assert np.isfinite(run.records["eval"]["test/loss"]).all()
    # The family's default layers, each named by number and Keras name.
    ics = RunDirectory(tmp_path / "straight").records("ics")[0]["ics/per_layer"]
    assert all(entry["name"] and entry["layer"] >= 1 for entry in ics)
    if family in ("vgg", "dln"):  # the paper's layers (PROTOCOL.md sections 3-4)
        assert [e["layer"] for e in ics] == {"vgg": [5, 10], "dln": [9, 17]}[family][:len(ics)]
    _claims_and_plots_read(run, family)


def _claims_and_plots_read(run, family):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.results import analysis, plots
    from pipeline.results.claims import claims_table
    from pipeline.results.claims_format import format_other_networks
    rows = claims_table([run])
    assert rows and all(row.verdict == "missing runs" for row in rows)  # one run: no pair
    others = format_other_networks([run])
    assert (family in others) == (family not in ("vgg", "dln")), others
    for figure in (plots.plot_training(analysis.records_frame([run], "train"),
                                       analysis.records_frame([run], "eval"), "loss"),
                   plots.plot_landscape(analysis.probe_frame([run], "landscape", expand=False)),
                   plots.plot_ics(analysis.probe_frame([run], "ics"))):
        assert figure.axes and any(ax.lines or ax.collections for ax in figure.axes)
        plt.close(figure)


@pytest.mark.slow
def test_the_ics_probe_of_a_resnet_with_noise_gives_the_same_bits_each_time_it_is_built():
    """On TensorFlow, Grappler's arithmetic rewrites regrouped the sums of this graph in
    an order that changed from one instance of the function to the next (and one process
    to the next): the probe's last bits did. The engine runs probes without them."""
    from conftest import training_state
    config = load_config(SMOKE, FAMILY_SETTINGS["resnet"] + [
        "model.norm=noise_only", "probes.ics.enabled=true", "probes.ics.layers=[2]"])
    engine, model, optimizer, arrays = training_state(config)
    values = [json.dumps(make_probes(config, engine, model, optimizer, arrays)[0](0))
              for _ in range(2)]
    assert values[0] == values[1]
