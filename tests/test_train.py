"""End-to-end training: run-directory contents, determinism, divergence as a result,
failures recorded (resume after SIGKILL: test_resume_faults.py)."""

import json

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import SMOKE, call_cli, make_config, training_state
from pipeline.core.config import load_config
from pipeline.core.runs import RunDirectory
from pipeline.inputs.tasks import task_of
from pipeline.probes import make_probes
from pipeline.probes.schedule import Schedule
from pipeline.training.train import RunConfigMismatch, train_and_evaluate


# A small noisy-BN DLN in mini-batches: its seed draws the weights, the batches' order
# and the noise, and XLA compiles it in a fraction of the noisy VGG's time.
NOISY_DLN = ["data.name=linear_regression", "model.family=dln", "model.depth=3",
             "model.norm=noisy_batch", "data.regression_dim=4", "data.regression_train_size=32",
             "data.batch_size=16", "data.eval_batch_size=32", "data.regression_test_size=32",
             "optim.lr=1e-3"]


def _strip(records):
    return [json.dumps(r, sort_keys=True) for r in records]


def test_smoke_run_writes_every_run_directory_file(tmp_path):
    config = load_config(SMOKE)
    meta = train_and_evaluate(config, tmp_path)
    run = RunDirectory(tmp_path)
    assert meta.status == "finished" and meta.step == 12
    assert load_config(tmp_path / "config.yaml") == config
    saved = run.read_meta()
    for key in ("versions", "git_revision", "seed", "devices", "strategy", "replicas",
                "status", "wall_time_s", "sync_batch_norm"):
        assert getattr(saved, key) is not None, key
    assert saved.versions["tensorflow"] and saved.replicas == 1
    assert [r["step"] for r in run.records("train")] == [0, 2, 4, 6, 8, 10]
    assert [r["step"] for r in run.records("eval")] == [6, 12]
    assert 0.0 <= run.records("eval")[-1]["test/accuracy"] <= 1.0
    assert run.records("train")[-1]["train/loss"] < run.records("train")[0]["train/loss"]
    assert sorted(p.name for p in run.checkpoint_dir.iterdir()) == ["ckpt-00000008.npz",
                                                                      "ckpt-00000012.npz"]
    # TensorBoard's own reader finds every train and eval record's numbers as scalars.
    events = EventAccumulator(str(run.tensorboard_dir))
    events.Reload()
    for stream, key in (("train", "train/loss"), ("eval", "test/accuracy")):
        assert [(e.step, e.value) for e in events.Scalars(key)] == [
            (r["step"], pytest.approx(r[key], rel=1e-6)) for r in run.records(stream)]
    # Running it again is a no-op: the run is finished.
    assert train_and_evaluate(config, tmp_path).restarts == 0
    assert len(run.records("train")) == 6


@pytest.mark.both_backends
@pytest.mark.slow
def test_same_seed_same_records_other_seed_other_records(tmp_path):
    # On NOISY_DLN: XLA compiles the noisy VGG's step for ~6 s on JAX (the BN VGG's for
    # ~2.5 s), much of it the random draws of its 8 noise layers; the VGG's runs are
    # compared to the byte on both backends by the resume tests (test_resume_faults.py).
    common = [*NOISY_DLN, "train.steps=6", "train.log_every=1", "train.eval_every=3"]
    config = load_config(SMOKE, common)
    train_and_evaluate(config, tmp_path / "a")
    train_and_evaluate(config, tmp_path / "b")
    train_and_evaluate(load_config(SMOKE, [*common, "seed=1"]), tmp_path / "c")
    a, b, c = (RunDirectory(tmp_path / n).records("train") for n in "abc")
    assert _strip(a) == _strip(b) and _strip(a) != _strip(c)


@pytest.mark.parametrize("switches", [
    ["train.precision=mixed_float16"],
    # XLA on the MLP (noisy BN, classification, as the VGG): what the switch changes (the
    # step compiled by XLA, its random noise stateless) does not depend on the layers,
    # and XLA compiles the VGG's step, evaluation and statistics for ~15 s of CPU more.
    ["train.xla=true", "train.deterministic=false", "model.family=mlp", "model.depth=4",
     "model.hidden_units=16"]])
@pytest.mark.slow
def test_mixed_precision_and_xla_switches_train(switches, tmp_path):
    config = load_config(SMOKE, ["train.steps=4", "model.norm=noisy_batch", *switches])
    meta = train_and_evaluate(config, tmp_path)
    assert meta.status == "finished"
    losses = [r["train/loss"] for r in RunDirectory(tmp_path).records("train")]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_other_config_in_same_workdir_is_refused(tmp_path):
    train_and_evaluate(load_config(SMOKE, ["train.steps=2"]), tmp_path)
    with pytest.raises(RunConfigMismatch, match=r"another config \(differing: train.steps\)"):
        train_and_evaluate(load_config(SMOKE, ["train.steps=3"]), tmp_path)


@pytest.mark.both_backends
def test_non_finite_loss_ends_the_run_as_diverged(tmp_path):
    config = load_config(SMOKE, ["model.norm=none", "optim.lr=1000", "train.steps=30",
                                 "train.log_every=10"])
    meta = train_and_evaluate(config, tmp_path)
    assert meta.status == "diverged" and 0 < meta.diverged_step < 30
    last = RunDirectory(tmp_path).records("train")[-1]
    assert last["step"] == meta.diverged_step and not np.isfinite(last["train/loss"])
    assert RunDirectory(tmp_path).read_meta().status == "diverged"
    assert call_cli("train", SMOKE, "--set", "model.norm=none", "--set", "optim.lr=1000",
                    "--set", "train.steps=30", "--set", "train.log_every=10",
                    "--workdir", tmp_path).stdout.startswith("diverged")


class _FailingProbe:
    # A declared stream (pipeline.core.records): the loop refuses others.
    name, schedule = "curvature", Schedule(range(1000))

    def __call__(self, step):
        if step == 5:
            raise RuntimeError("probe broke")
        return {"curvature/loss": float(step)}


def test_an_exception_is_recorded_as_failed_and_the_run_resumes_later(tmp_path):
    config = load_config(SMOKE, ["train.steps=8", "train.checkpoint_every=2"])
    with pytest.raises(RuntimeError, match="probe broke"):
        train_and_evaluate(config, tmp_path, probes_factory=lambda *args: [_FailingProbe()])
    meta = RunDirectory(tmp_path).read_meta()
    assert meta.status == "failed" and "probe broke" in meta.error and meta.step == 4
    assert [r["step"] for r in RunDirectory(tmp_path).records("curvature")] == [0, 1, 2, 3, 4]
    resumed = train_and_evaluate(config, tmp_path)
    assert resumed.status == "finished" and resumed.start_step == 4
    # Records beyond the checkpoint were dropped, then written again once.
    assert [r["step"] for r in RunDirectory(tmp_path).records("train")] == [0, 2, 4, 6]


def _records(workdir):
    run = RunDirectory(workdir)
    return {stream: _strip(run.records(stream)) for stream in run.streams()}


@pytest.mark.slow
def test_records_are_identical_for_one_and_several_steps_per_call(tmp_path):
    common = ["model.norm=noisy_batch", "train.steps=23", "train.log_every=1",
              "train.eval_every=7", "train.checkpoint_every=10", "probes.landscape.enabled=true",
              "probes.landscape.every=6"]
    # Five steps per call cross the probe, evaluation and checkpoint steps and end in a
    # short call. (A fixed long call differs from five only in its length, and auto only in
    # how its lengths are chosen: the DLN test below has both, on both backends.)
    for name, steps_per_call in (("one", 1), ("five", 5)):
        train_and_evaluate(load_config(SMOKE, [*common, f"train.steps_per_call={steps_per_call}"]),
                           tmp_path / name, probes_factory=make_probes)
    one = _records(tmp_path / "one")
    assert sorted(one) == ["eval", "landscape", "train"]
    assert [r["step"] for r in RunDirectory(tmp_path / "one").records("eval")] == [7, 14, 21, 23]
    assert _records(tmp_path / "five") == one
    meta = RunDirectory(tmp_path / "five").read_meta()
    backend = keras.backend.backend()
    assert meta.backend == backend
    assert meta.runtime == {"accelerator": "cpu", "xla": backend == "jax",
                            "deterministic": True, "steps_per_call": 5, "backend": backend,
                            "threads": int(backend == "tensorflow")}


@pytest.mark.slow
@pytest.mark.both_backends
def test_dln_records_do_not_depend_on_the_steps_per_call(tmp_path):
    # 75 steps cross the JAX engine's stacks of 32 steps per compiled program; calls of
    # 1, 7, 1000 or auto steps end at other places, and the records must not change.
    common = ["data.name=linear_regression", "model.family=dln", "model.depth=5",
              "model.norm=batch", "data.regression_dim=4", "data.regression_train_size=64",
              "data.batch_size=64", "data.eval_batch_size=64", "data.regression_test_size=64",
              "optim.lr=1e-3", "train.steps=75", "train.log_every=1", "train.eval_every=20",
              "train.checkpoint_every=30", "train.progress=false"]
    for name, steps_per_call in (("one", 1), ("seven", 7), ("many", 1000), ("auto", "auto")):
        train_and_evaluate(load_config(SMOKE, [*common, f"train.steps_per_call={steps_per_call}"]),
                           tmp_path / name)
    one = _records(tmp_path / "one")
    evals = RunDirectory(tmp_path / "one").records("eval")
    assert len(one["train"]) == 75 and [r["step"] for r in evals] == [20, 40, 60, 75]
    for name in ("seven", "many", "auto"):
        assert _records(tmp_path / name) == one, name


@pytest.mark.both_backends
@pytest.mark.slow  # ~20 s of compiling: first, not at the end of the JAX pass
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the JAX engine's programs")
def test_a_run_on_an_earlier_seeds_programs_writes_the_records_of_a_run_alone(
        tmp_path, monkeypatch):
    # A sweep's worker reuses the compiled programs of an earlier run of the same config
    # but its seed (pipeline.engines.jax.engine.reuse_programs). Noisy BN (seeded noise
    # states), every probe (the curvature probe's seeded start) and mini-batches (seeded
    # order): seed 1 on seed 0's programs must write the records of seed 1 alone.
    from pipeline.engines.jax import engine as jax_engine
    from pipeline.training.worker import forget_the_run
    common = [*NOISY_DLN, "train.steps=12", "train.log_every=1", "train.eval_every=5",
              "train.checkpoint_every=6", "train.progress=false", "probes.ics.layers=[2,3]",
              "probes.distributions.layers=[1,3]",
              *(f"probes.{name}.{key}" for name in ("ics", "landscape", "curvature", "distributions")
                for key in ("enabled=true", "every=4"))]

    def run(name, *overrides):
        train_and_evaluate(load_config(SMOKE, [*common, *overrides]), tmp_path / name,
                           probes_factory=make_probes)
        forget_the_run()
        return _records(tmp_path / name)
    monkeypatch.setattr(jax_engine, "_PROGRAMS", {})
    alone = run("alone", "seed=1")
    assert jax_engine._PROGRAMS == {}  # not asked to reuse
    monkeypatch.setattr(jax_engine, "_REUSE", True)
    first = run("first", "seed=0")
    assert first != alone and sorted(alone) == [
        "curvature", "distributions", "eval", "ics", "landscape", "train"]
    programs = dict(jax_engine._PROGRAMS)
    assert len(programs) >= 6  # training, evaluation (2) and the 4 probes' programs
    assert run("reused", "seed=1") == alone
    assert jax_engine._PROGRAMS == programs  # nothing new was made for it
    run("other", "seed=1", "optim.lr=2e-3")  # another config: programs of its own
    assert len(jax_engine._PROGRAMS) == 2 * len(programs)


@pytest.mark.both_backends
def test_divergence_inside_a_multi_step_call_is_reported_at_its_own_step(tmp_path):
    common = ["model.norm=none", "optim.lr=1000", "train.steps=30", "train.log_every=10",
              "train.checkpoint_every=30", "train.eval_every=30"]
    one = train_and_evaluate(load_config(SMOKE, [*common, "train.steps_per_call=1"]), tmp_path / "a")
    many = train_and_evaluate(load_config(SMOKE, [*common, "train.steps_per_call=30"]),
                              tmp_path / "b")
    step = one.diverged_step
    # Not at a call boundary: the call of 30 steps stopped inside, at the first bad loss.
    assert 0 < step < 29 and step % 10 != 0
    assert many.status == "diverged" and many.diverged_step == step
    assert _records(tmp_path / "a") == _records(tmp_path / "b")
    assert RunDirectory(tmp_path / "b").records("train")[-1]["step"] == step


@pytest.mark.both_backends
def test_a_call_stops_changing_the_weights_after_its_first_non_finite_loss():
    # The engine contract (pipeline.engines.base): one call of many steps leaves the
    # variables as single steps do up to and including the first non-finite loss.
    config = load_config(SMOKE, ["model.norm=none", "optim.lr=1000"])
    engine, model, optimizer, arrays = training_state(config)
    initial = [v.numpy() for v in model.variables]
    single = engine.train_steps(model, optimizer, task_of(arrays), arrays, 0)
    losses = []
    while not losses or np.isfinite(losses[-1]):
        losses.append(float(single(1)[0][0]))
    after_single = [v.numpy() for v in model.variables + optimizer.variables]
    for variable, value in zip(model.variables, initial):
        variable.assign(value)
    optimizer.iterations.assign(0)
    many, _ = engine.train_steps(model, optimizer, task_of(arrays), arrays, 0)(len(losses) + 5)
    assert len(many) == len(losses) and not np.isfinite(many[-1])
    for got, want in zip([v.numpy() for v in model.variables + optimizer.variables], after_single):
        np.testing.assert_array_equal(got, want)


def test_every_engine_defines_the_whole_contract():
    import inspect
    from pipeline.engines import base
    from pipeline.engines.jax.engine import Engine as JaxEngine
    from pipeline.engines.tensorflow.engine import Engine as TensorFlowEngine
    members = {name for name, _ in inspect.getmembers(base.Engine) if not name.startswith("_")}
    members |= set(base.Engine.__annotations__)
    assert {"train_steps", "step_function", "optimizer_update", "replicas"} <= members
    for engine in (TensorFlowEngine, JaxEngine):
        assert all(hasattr(engine, name) for name in members), (
            engine, sorted(name for name in members if not hasattr(engine, name)))


def test_calls_end_where_an_event_is_due():
    from pipeline.training.loop import CallLength, steps_to_next_event
    assert steps_to_next_event(0, [25, 100], 500) == 25
    assert steps_to_next_event(25, [25, 100], 500) == 25
    assert steps_to_next_event(90, [25, 100, 7], 500) == 1     # step 91 is 13 x 7
    assert steps_to_next_event(495, [100], 500) == 5
    length = CallLength("auto")
    assert length() == 1                  # the first call traces: one step
    length.observe(seconds=0.5, steps=100)
    assert length() == 200                # about a second at 5 ms per step
    length.observe(seconds=1e-6, steps=10)
    assert length() == CallLength.MAX_STEPS
    assert CallLength(7)() == 7
    assert CallLength("auto", multi_worker=True)() == CallLength.MULTI_WORKER_STEPS


# A BN DLN of 3 layers trained by full-batch gradient descent on 32 rows.
SMALL_FULL_BATCH_DLN = ("data.name=linear_regression", "model.family=dln", "model.depth=3",
                        "model.norm=batch", "data.regression_dim=4",
                        "data.regression_train_size=32", "data.batch_size=32", "optim.lr=1e-3")


@pytest.mark.both_backends
def test_the_bench_floor_runs_the_training_step_in_one_compiled_loop():
    # The floor of `make bench` must be the same computation as the step it bounds:
    # 5 steps in one compiled loop end where 5 calls of the step end, from the same start.
    from pipeline.inputs.data import batch_at
    config = make_config(*SMALL_FULL_BATCH_DLN)
    losses = []
    for use_floor in (False, True):
        engine, model, optimizer, arrays = training_state(config)
        batch = batch_at(config, arrays, 0)
        if use_floor:
            losses.append(engine.bare_loop(model, optimizer, task_of(arrays), batch, 5)())
        else:
            step = engine.step_function(model, optimizer, task_of(arrays))
            losses.append([float(step(*batch)[0]) for _ in range(5)][-1])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


@pytest.mark.both_backends
def test_full_batch_training_equals_single_steps_on_each_steps_batch():
    # Full-batch gradient descent: the JAX engine keeps the batch on the device for
    # every step of every call. 300 steps (more than a program's 256) must give, bit for bit,
    # the losses of single steps fed the batch the stream makes for each step (each loss
    # is of the weights all earlier updates made).
    from pipeline.inputs.data import batch_at
    config = make_config(*SMALL_FULL_BATCH_DLN)
    losses = []
    for whole_calls in (True, False):
        engine, model, optimizer, arrays = training_state(config)
        if whole_calls:
            train_steps = engine.train_steps(model, optimizer, task_of(arrays), arrays, 0)
            got = np.concatenate([train_steps(count)[0] for count in (1, 299)])
        else:
            step = engine.step_function(model, optimizer, task_of(arrays))
            got = [step(*batch_at(config, arrays, t))[0] for t in range(300)]
        losses.append(np.asarray(got, np.float32))
    np.testing.assert_array_equal(losses[0], losses[1])
    assert losses[0][-1] < losses[0][0]


def test_the_bench_slowdown_counts_only_the_probes_the_config_enables():
    # The demo's VGG enables no curvature probe: its cost must not enter the demo's
    # slowdown. Landscape: 5 steps a call, 10 calls; ICS: 2 steps, 20 calls; 100 steps.
    from pipeline.speed.bench import schedule_slowdown
    costs = {"landscape": (5.0, 10), "ics": (2.0, 20), "curvature": (24.0, 2)}
    assert schedule_slowdown(costs, {"landscape", "ics"}, 100) == pytest.approx(0.9)
    assert schedule_slowdown(costs, set(costs), 100) == pytest.approx(1.38)
