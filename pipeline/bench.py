"""Benchmark: probe cost in units of one training step, and the slowdown of a run with
the probes at the config's schedule. Prints numbers measured in one process, so ratios
are comparable even on a shared, noisy machine."""

import time

import numpy as np
import tensorflow as tf

from pipeline.config import load_config
from pipeline.data import load_arrays
from pipeline.probes import make_probes
from pipeline.runtime import configure_runtime
from pipeline.train import (build_training_state, distributed_batches,
                            make_train_step)

ALL_PROBES = ("landscape", "ics", "distributions", "curvature")


def _median_seconds(function, repeats):
    times = []
    for index in range(repeats):
        began = time.perf_counter()
        function(index)
        times.append(time.perf_counter() - began)
    return float(np.median(times))


def benchmark(config_path, overrides=(), steps=30, repeats=5):
    """Rows of (what, seconds, training steps) plus the schedule's slowdown."""
    enable = [f"probes.{name}.enabled=true" for name in ALL_PROBES]
    config = load_config(config_path, [*enable, *overrides])
    configure_runtime(config)
    strategy = tf.distribute.get_strategy()
    arrays = load_arrays(config.data)
    model, optimizer = build_training_state(config, arrays.num_classes, strategy)
    iterator = distributed_batches(config, arrays, strategy)
    train_step = make_train_step(config, model, optimizer, strategy)
    for _ in range(3):  # compile and warm up
        float(train_step(iterator)[0])
    step_seconds = _median_seconds(lambda _: float(train_step(iterator)[0]), steps)
    rows = [("training step", step_seconds, 1.0, "")]
    overhead = 0.0
    for probe in make_probes(config, model, optimizer, arrays):
        probe.batches(0)
        probe(0)  # compile
        seconds = _median_seconds(lambda _: probe(0), repeats)
        note = ""
        if probe.name == "landscape":
            grid = len(probe.etas)
            note = (f"grid of {grid}: {seconds / step_seconds / grid:.2f} steps per grid point "
                    "(target <= 1.3)")
        rows.append((f"probe {probe.name} (every {probe.every})", seconds,
                     seconds / step_seconds, note))
        overhead += seconds / probe.every
    return rows, overhead / step_seconds


def format_benchmark(rows, slowdown):
    lines = [f"{'what':34s} {'seconds':>9s} {'steps':>7s}  note"]
    lines += [f"{what:34s} {seconds:9.4f} {steps:7.2f}  {note}" for what, seconds, steps, note in rows]
    lines.append(f"run slowdown at this probe schedule: {100 * slowdown:.1f} % (target <= 15 %)")
    return "\n".join(lines)
