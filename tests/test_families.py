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

# The families written through the registry (the ResNet, the MLP), each at a size that
# trains in seconds, with BN (a resume must restore the moving statistics; evaluation
# recomputes them), their default probe layers, on both backends. The ResNet at depth 8
# (6n+2 with n = 1): ResNet-20's code, blocks, shortcuts and stages, with one block a
# stage instead of three; XLA compiled depth 20's probes for 28 s of this test's 43 on
# JAX. Depth 20 itself is built and probed below (its ICS's bits). The paper's networks
# pass the same contract in the tests written for them (UNDER_CONTRACT_ELSEWHERE), where
# it is tested at length: noisy BN, kills at random moments, every probe on both backends.
FAMILY_SETTINGS = {
    "resnet": ["model.family=resnet", "model.depth=8", "model.width_multiplier=0.125",
               "probes.ics.layers=null", "probes.distributions.layers=null"],
    "mlp": ["model.family=mlp", "model.depth=4", "model.hidden_units=16",
            "probes.ics.layers=null", "probes.distributions.layers=null"],
}
UNDER_CONTRACT_ELSEWHERE = {
    "vgg": ["test_probes.py::test_training_with_every_probe_gives_the_same_training_records",
            "test_resume_faults.py::test_killed_at_random_moments_and_resumed_each_time_gives_the_"
            "uninterrupted_records", "test_backends.py", "test_evaluation.py",
            "test_notebooks.py::test_every_notebook_makes_its_figures_and_the_report"],
    "dln": ["test_backends.py", "test_train.py::test_dln_records_do_not_depend_on_the_steps_per_"
            "call", "test_notebooks.py::test_every_notebook_makes_its_figures_and_the_report"],
}
EVERY_PROBE = [f"probes.{name}.{key}" for name in ("ics", "landscape", "distributions", "curvature")
               for key in ("enabled=true", "every=3")] + [
    "probes.curvature.iterations=3", "probes.distributions.sample_size=16"]
COMMON = ["model.norm=batch", "eval.bn_batches=2", "train.steps=6", "train.log_every=1",
          "train.eval_every=3",
          "train.checkpoint_every=3", *EVERY_PROBE]


def _records(path, before=None):
    run = RunDirectory(path)
    return {stream: [json.dumps(r, sort_keys=True) for r in run.records(stream)
                     if before is None or r["step"] < before]
            for stream in STREAMS if run.records_path(stream).exists()}


def _as_killed_after(source, target, step):
    """`target`: a copy of the finished run `source` as a kill after its checkpoint of
    `step` leaves it: that checkpoint the newest, meta.json `running` at that step, the
    records written after it still there (a resume drops them)."""
    import shutil
    shutil.copytree(source, target)
    run = RunDirectory(target)
    for checkpoint in run.checkpoint_dir.glob("ckpt-*.npz"):
        if int(checkpoint.stem.split("-")[1]) > step:
            checkpoint.unlink()
    run.write_meta(run.read_meta().with_(status="running", step=step))


@pytest.mark.both_backends
@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILY_SETTINGS))
def test_every_registered_family_trains_probes_resumes_evaluates_and_is_read(family, tmp_path):
    # Every registered family is under contract, here or in the tests it names.
    assert set(FAMILY_SETTINGS) | set(UNDER_CONTRACT_ELSEWHERE) == set(built_in_families())
    from pipeline import engines
    if engines.backend_in_use() == "jax":
        # As a sweep's worker does: the resumed run reuses the programs the first one
        # compiled (the same records to the byte, tests/test_sweep.py). This test only.
        engines.module("engine").reuse_programs()
    config = load_config(SMOKE, COMMON + FAMILY_SETTINGS[family])
    straight = train_and_evaluate(config, tmp_path / "straight", probes_factory=make_probes)
    assert straight.status == "finished"
    records = _records(tmp_path / "straight")
    assert set(records) == {"train", "eval", "ics", "landscape", "distributions", "curvature"}

    # Killed after the checkpoint of step 3 and resumed: the training and evaluation
    # records of the uninterrupted run, to the byte (the probes' records follow from the
    # same weights; that they resume exactly is tested on the paper's networks, and
    # resuming without them spares tracing them again).
    _as_killed_after(tmp_path / "straight", tmp_path / "resumed", 3)
    resumed = train_and_evaluate(config, tmp_path / "resumed")
    assert resumed.status == "finished" and resumed.start_step == 3
    again = _records(tmp_path / "resumed")
    assert {s: again[s] for s in ("train", "eval")} == {s: records[s] for s in ("train", "eval")}
    assert again == {**_records(tmp_path / "straight", before=3), "train": again["train"],
                     "eval": again["eval"]}  # the probes' records before the kill, kept

    run = load_run(tmp_path / "straight")  # read as claims and figures read it
    assert [r["step"] for r in RunDirectory(tmp_path / "straight").records("eval")] == [3, 6]
    assert np.isfinite(run.records["eval"]["test/loss"]).all()
    ics = RunDirectory(tmp_path / "straight").records("ics")[0]["ics/per_layer"]
    assert all(entry["name"] and entry["layer"] >= 1 for entry in ics)
    _claims_and_plots_read(run, family)


def test_the_paper_families_default_to_the_papers_layers_and_others_spread_them():
    from conftest import REPO
    for tests in UNDER_CONTRACT_ELSEWHERE.values():  # the tests named there exist
        for test in tests:
            file, _, name = test.partition("::")
            assert not name or f"def {name}(" in (REPO / "tests" / file).read_text(), test
    families = built_in_families()
    # PROTOCOL.md sections 3-4 (VGG16: 16 weight layers; the DLN: 25).
    assert families["vgg"].default_layers("ics", 16) == [5, 10]
    assert families["vgg"].default_layers("distributions", 16) == [3, 11]
    assert families["dln"].default_layers("ics", 25) == [9, 17]
    assert families["dln"].default_layers("distributions", 25) == [1, 11, 24]
    # ResNet-20 (20 weight layers): a third and two thirds; first, middle, last but one.
    assert families["resnet"].default_layers("ics", 20) == [7, 13]
    assert families["resnet"].default_layers("distributions", 20) == [1, 10, 19]
    # Never layer 1 of several for ICS: nothing before it moves, its ICS is 0.
    assert families["mlp"].default_layers("ics", 2) == [2]
    assert families["mlp"].default_layers("ics", 4) == [2, 3]
    assert families["mlp"].default_layers("ics", 1) == [1]


def _claims_and_plots_read(run, family):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.results import analysis, plots
    from pipeline.results.claims import claims_table
    from pipeline.results.claims_format import format_other_networks
    rows = claims_table([run])
    assert rows and all(row.verdict == "missing runs" for row in rows)  # no paper network
    others = format_other_networks([run])
    assert family in others, others
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
        "model.depth=20", "model.norm=noise_only", "probes.ics.enabled=true",
        "probes.ics.layers=[2]"])
    engine, model, optimizer, arrays = training_state(config)
    values = [json.dumps(make_probes(config, engine, model, optimizer, arrays)[0](0))
              for _ in range(2)]
    assert values[0] == values[1]
