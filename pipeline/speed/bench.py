"""Benchmark (`make bench`): speed of the training loop against its floor (the same
step in a compiled loop), of the input pipeline, and the cost of the probes, each
measured in one process as ratios, so the numbers compare on a shared, noisy machine.

- whole loop: `train_and_evaluate` with probes off (records, evaluations, checkpoints at
  the config's cadence), timed from the end of its first, tracing call.
- floor: the engine's SGD step on the same model and one fixed batch, many steps in one
  compiled program (`lax.fori_loop` on JAX, a `tf.while_loop` on TensorFlow): the speed
  of the model itself, with no input pipeline, records or dispatch.
- input pipeline: the training `tf.data` stream alone, drained inside tf.data.
- time to first step: `python -m pipeline train` of one step on each backend, from the
  process's start to its exit (imports, data, model, tracing).
- probes: each probe's cost in training steps, and the slowdown of a run at the
  config's probe schedule.
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline import engines
from pipeline.core.config import load_config
from pipeline.engines import make_engine
from pipeline.inputs.data import TrainStream, load_arrays
from pipeline.inputs.tasks import task_of
from pipeline.nets.layers import NoisyBatchNormalization, sample_shift_noise
from pipeline.probes import REGISTRY, make_probes
from pipeline.training.runtime import configure_runtime
from pipeline.training.train import build_training_state, train_and_evaluate

# Targets of the speed issue, as (ratio name, bound, "min" or "max").
TARGETS = {"whole/floor": {"vgg": 0.9, "dln": 0.9}, "batch/none": {"vgg": 1.25},
           "noisy_batch/batch": {"vgg": 1.3}, "l1/batch": {"dln": 1.5}}


def _quiet(config_path, overrides):
    return load_config(config_path, [*overrides, "train.progress=false"])


def whole_loop_steps_per_second(config_path, overrides, steps):
    """Steps per second of the whole training loop (probes off), after its first call,
    which traces: what `train_and_evaluate` records as meta.json's `steps_per_second`."""
    config = _quiet(config_path, [*overrides, f"train.steps={steps}"])
    with tempfile.TemporaryDirectory() as folder:
        return train_and_evaluate(config, Path(folder) / "run").steps_per_second


def _fresh_state(config):
    """(runtime, engine, arrays, model, optimizer) of `config`, as a run starts."""
    runtime = configure_runtime(config)
    engine = make_engine(config, runtime)
    arrays = load_arrays(config.data)
    model, optimizer = build_training_state(config, arrays, engine)
    return runtime, engine, arrays, model, optimizer


# Steps per call of the floor: enough that one call's dispatch is negligible.
FLOOR_STEPS = {"vgg": 10, "dln": 500}


def _floor(config):
    """(`() -> loss` running FLOOR_STEPS steps of a fresh model of `config` on a fixed
    batch in one compiled program, that step count)."""
    _, engine, arrays, model, optimizer = _fresh_state(config)
    count = FLOOR_STEPS[config.model.family]
    batch = TrainStream(config, arrays).batch(0)
    return engine.bare_loop(model, optimizer, task_of(arrays), batch, count), count


def floors(config_path, norms, overrides):
    """{norm: (floor call, its step count)}, each on its own fresh model."""
    return {norm: _floor(_quiet(config_path, [*overrides, f"model.norm={norm}"]))
            for norm in norms}


def time_in_turns(functions, repeats, warmup=3):
    """{name: [seconds of each of `repeats` calls]} of argument-free functions. They take
    turns call by call, so a change in the machine's load hits all of them alike and
    their ratios stay fair. The first `warmup` rounds (tracing, caches) are not timed."""
    times = {name: [] for name in functions}
    for index in range(repeats + warmup):
        for name, function in functions.items():
            began = time.perf_counter()
            function()
            if index >= warmup:
                times[name].append(time.perf_counter() - began)
    return times


def _median_seconds(function, repeats, warmup=0):
    return float(np.median(time_in_turns({"": function}, repeats, warmup)[""]))


def noise_draw_seconds(config_path, overrides, repeats=10):
    """Seconds to draw one step's Algorithm-1 noise for every noisy layer of the model,
    alone: the floor of what noisy BN can cost over BN; and the number of activations."""
    config = _quiet(config_path, [*overrides, "model.norm=noisy_batch"])
    _, _, _, model, _ = _fresh_state(config)
    noisy = [layer for layer in model.layers if isinstance(layer, NoisyBatchNormalization)]
    # The unknown axis is the batch (axis 1 in the DLN's feature-major activations).
    shapes = [tuple(config.data.batch_size if size is None else size
                    for size in layer.output.shape) for layer in noisy]
    draws = engines.module("noise_floor").noise_draws(noisy, shapes, sample_shift_noise)
    elements = sum(int(np.prod(shape)) for shape in shapes)
    return _median_seconds(draws, repeats, warmup=2), elements


def random_word_seconds(count, repeats=10):
    """Seconds for the backend's random kernel to make `count` uniform floats alone."""
    return _median_seconds(engines.module("noise_floor").random_words(count), repeats, warmup=2)


def input_batches_per_second(config_path, overrides, batches):
    """Training batches per second of the input pipeline alone (no model)."""
    config = _quiet(config_path, overrides)
    configure_runtime(config)
    stream = TrainStream(config, load_arrays(config.data))
    stream.drain(10)  # build the pipeline and warm the caches
    began = time.perf_counter()
    assert stream.drain(batches) == batches
    return batches / (time.perf_counter() - began)


# Length of the whole-loop runs: several seconds, and two evaluations and checkpoints
# after the first (which traces and is not timed).
WHOLE_STEPS = {"vgg": 300, "dln": 3000}


# Whole loops per norm, their median reported: one alone read 0.84 to 0.97 of its floor
# for the JAX BN DLN within an hour.
WHOLE_REPEATS = 3


def loop_speeds(config_path, norms, overrides=(), whole_steps=None, floor_calls=6,
                input_batches=500):
    """Rows {norm, whole, floor, floor_in_turns, input} in steps (batches) per second,
    one per norm. `whole` is the median of `WHOLE_REPEATS` whole loops and `floor` the
    median of floor calls timed just before and after each of them, so whole/floor does
    not move with the machine's load between the two; `floor_in_turns` with the norms'
    floors taking turns call by call (for the step-cost ratios between norms)."""
    whole_steps = whole_steps or WHOLE_STEPS[_quiet(config_path, overrides).model.family]
    by_norm = floors(config_path, norms, overrides)
    turns = time_in_turns({norm: call for norm, (call, _) in by_norm.items()}, floor_calls)
    rows = []
    for norm in norms:
        call, count = by_norm[norm]
        variant = [*overrides, f"model.norm={norm}"]
        floor_seconds = time_in_turns({norm: call}, floor_calls // 2, warmup=1)[norm]
        wholes = []
        for _ in range(WHOLE_REPEATS):
            wholes.append(whole_loop_steps_per_second(config_path, variant, whole_steps))
            floor_seconds += time_in_turns({norm: call}, floor_calls // 2, warmup=0)[norm]
        rows.append({
            "norm": norm,
            "whole": float(np.median(wholes)),
            "floor": count / float(np.median(floor_seconds)),
            "floor_in_turns": count / float(np.median(turns[norm])),
            "input": input_batches_per_second(config_path, variant, input_batches),
        })
    return rows


def format_loop_speeds(config_path, rows, overrides=()):
    config = _quiet(config_path, overrides)
    batch, family = config.data.batch_size, config.model.family
    from pipeline.engines import backend_in_use
    lines = [f"{config_path}: {config.description} (batch {batch}, {family}, {backend_in_use()})",
             f"{'norm':12s} {'whole loop':>17s} {'floor':>17s} {'whole/floor':>11s} "
             f"{'input pipeline':>19s} {'input/whole':>11s}",
             f"{'':12s} {'steps/s':>8s} {'ex/s':>8s} {'steps/s':>8s} {'ex/s':>8s} {'':>11s} "
             f"{'batches/s':>9s} {'ex/s':>9s}"]
    for r in rows:
        lines.append(f"{r['norm']:12s} {r['whole']:8.1f} {r['whole'] * batch:8.0f} "
                     f"{r['floor']:8.1f} {r['floor'] * batch:8.0f} "
                     f"{r['whole'] / r['floor']:11.2f} "
                     f"{r['input']:9.0f} {r['input'] * batch:9.0f} {r['input'] / r['whole']:11.1f}")
    lines.append(f"floor: {FLOOR_STEPS[family]} steps per compiled call on one batch; whole "
                 f"loop: the median of {WHOLE_REPEATS}; "
                 f"target: whole/floor >= {TARGETS['whole/floor'][family]} with BN")
    by_norm = {r["norm"]: r for r in rows}
    for slower, faster in (("batch", "none"), ("noisy_batch", "batch"), ("l1", "batch")):
        if slower in by_norm and faster in by_norm:
            ratio = by_norm[faster]["floor_in_turns"] / by_norm[slower]["floor_in_turns"]
            target = TARGETS.get(f"{slower}/{faster}", {}).get(family)
            lines.append(f"step time {slower} / {faster} (floors, in turns): {ratio:.2f}"
                         + (f" (target <= {target})" if target else ""))
    return "\n".join(lines)


def first_step_seconds(config_path, backend, overrides=()):
    """Wall seconds of `python -m pipeline train` of one step on `backend` without
    probes, from the process's start to its exit."""
    off = [f"probes.{name}.enabled=false" for name in REGISTRY]
    with tempfile.TemporaryDirectory() as folder:
        args = [sys.executable, "-m", "pipeline", "--backend", backend, "train", str(config_path),
                "--workdir", str(Path(folder) / "run")]
        for item in (*overrides, *off, "train.steps=1", "train.progress=false"):
            args += ["--set", item]
        began = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        return time.perf_counter() - began


def format_first_steps(config_path, overrides=()):
    from pipeline.core.backend import BACKENDS
    seconds = {backend: first_step_seconds(config_path, backend, overrides) for backend in BACKENDS}
    return ("time to first step (python -m pipeline train of 1 step, process start to exit): "
            + ", ".join(f"{backend} {value:.1f} s" for backend, value in seconds.items()))


def schedule_slowdown(costs, enabled, total_steps):
    """The fraction of a run's training time its probes add: `costs` maps each probe's
    name to (training steps per call, calls in a run of `total_steps`); only the names in
    `enabled` (the probes the run's config switches on) count."""
    return sum(steps * calls for name, (steps, calls) in costs.items()
               if name in enabled) / total_steps


def probe_costs(config_path, overrides=(), steps=30, repeats=5):
    """Rows of (what, seconds, training steps, note) for every probe, plus the slowdown
    of a run at the config's probe schedule: the probes the config enables, each at its
    own schedule (a probe it leaves off is measured at its schedule but not counted)."""
    enabled = {name for name in REGISTRY
               if getattr(_quiet(config_path, overrides).probes, name).enabled}
    enable = [f"probes.{name}.enabled=true" for name in REGISTRY]
    config = _quiet(config_path, [*enable, *overrides])
    _, engine, arrays, model, optimizer = _fresh_state(config)
    train_steps = engine.train_steps(model, optimizer, task_of(arrays), arrays, 0)
    step_seconds = _median_seconds(lambda: train_steps(1), steps, warmup=3)
    rows, costs = [("training step", step_seconds, 1.0, "")], {}
    for probe in make_probes(config, engine, model, optimizer, arrays):
        records = []  # what the timed calls return (the same record each time)
        seconds = _median_seconds(lambda: records.append(probe(0)), repeats, warmup=1)
        notes = [] if probe.name in enabled else ["off in this config: not in the slowdown"]
        if probe.name == "landscape":
            grid = len(probe.etas)
            notes.append(f"grid of {grid}: {seconds / step_seconds / grid:.2f} steps per grid "
                         "point (target <= 1.3)")
        if probe.name == "curvature":
            # Its cost is (products to convergence) x (cost of one product): which of the
            # two a change moves.
            products = records[-1]["curvature/iterations"]
            notes.append(f"{products:.0f} Hessian-vector products of "
                         f"{seconds / step_seconds / products:.2f} steps each")
        count = len(probe.schedule.steps)
        rows.append((f"probe {probe.name} ({count} of {config.train.steps} steps)", seconds,
                     seconds / step_seconds, "; ".join(notes)))
        costs[probe.name] = (seconds / step_seconds, count)
    return rows, schedule_slowdown(costs, enabled, config.train.steps)


def format_probe_costs(rows, slowdown):
    lines = [f"{'what':42s} {'seconds':>9s} {'steps':>7s}  note"]
    lines += [f"{what:42s} {seconds:9.4f} {steps:7.2f}  {note}"
              for what, seconds, steps, note in rows]
    lines.append(f"run slowdown at this config's probe schedule (the probes it enables): "
                 f"{100 * slowdown:.1f} % (target <= 15 %)")
    return "\n".join(lines)


def run_benchmarks(config_path, norms, overrides=(), whole_steps=None, echo=lambda line: None):
    """Everything `make bench` prints for one config, as text; `echo(line)` is told
    which part is being measured (minutes of silence otherwise)."""
    echo(f"measuring the training loop against its floor, norms {', '.join(norms)}")
    rows = loop_speeds(config_path, norms, overrides, whole_steps)
    echo("measuring the time to the first step on each backend (a process each)")
    parts = [format_loop_speeds(config_path, rows, overrides) + "\n"
             + format_first_steps(config_path, overrides)]
    if "noisy_batch" in norms and "batch" in norms and engines.has_module("noise_floor"):
        echo("measuring the noise draws")
        seconds, elements = noise_draw_seconds(config_path, overrides)
        bn_step = 1.0 / next(r["floor_in_turns"] for r in rows if r["norm"] == "batch")
        words = random_word_seconds(2 * elements)
        parts[0] += (f"\nnoise draws alone (uniform + normal for {elements:,} activations): "
                     f"{1e3 * seconds:.1f} ms = {seconds / bn_step:.2f} BN steps"
                     f"\n  of which the {2 * elements:,} random words alone (Philox): "
                     f"{1e3 * words:.1f} ms = {words / bn_step:.2f} BN steps")
    echo("measuring each probe's cost in training steps")
    parts.append(format_probe_costs(*probe_costs(config_path, overrides)))
    return "\n\n".join(parts)
