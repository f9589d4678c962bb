"""Training a run: `train_and_evaluate(config, workdir)`.

One loop for both backends: the engine (pipeline.engines) runs the compiled steps, the
evaluation and the probes' primitives. This module starts or resumes a run in its run
directory (the config check, the model, the checkpoint to resume from, meta.json and
the run's status) and hands it to the loop, `pipeline.training.loop.run_loop`.
"""

import dataclasses
import getpass
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import yaml

import pipeline
from pipeline import engines
from pipeline.core import interrupts, records
from pipeline.core.config import load_config, to_yaml
from pipeline.core.errors import InputError
from pipeline.core.fingerprint import checkpoint_identity
from pipeline.core.run_checks import check_seal, check_streams, differing_keys
from pipeline.core.user_code import describe_callable, import_callable
from pipeline.core.runs import CONFIG_FILE, RunDirectory, default_workdir, read_saved_config
from pipeline.engines import make_engine
from pipeline.inputs.data import load_arrays
from pipeline.inputs.tasks import task_of
from pipeline.nets.families import build_model
from pipeline.training.checkpoint import checkpoints, restore_latest
from pipeline.training.loop import TrainingState, run_loop
from pipeline.training.runtime import configure_runtime


class RunConfigMismatch(InputError):
    """The work directory holds a run made with another config."""


def make_optimizer(config):
    o = config.optim
    # Named, so its variables' paths (checkpoint keys) are `sgd/...` in every process.
    optimizer = keras.optimizers.SGD(learning_rate=o.lr, momentum=o.momentum,
                                     weight_decay=o.weight_decay or None, name="sgd")
    if config.train.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def build_training_state(config, arrays, engine):
    """Model (its family's, for `arrays`' inputs and outputs) and built optimizer, their
    variables placed by `engine`."""
    def build():
        model = build_model(config, arrays.input_shape, arrays.num_outputs)
        optimizer = make_optimizer(config)
        optimizer.build(model.trainable_variables)
        return model, optimizer
    return engine.build(build)


def user_code(config):
    """{key: {function, file, sha256}} of the user's functions `config` names."""
    named = {"model.factory": config.model.factory, "data.loader": config.data.loader}
    return {key: describe_callable(import_callable(key, path))
            for key, path in named.items() if path}


def _git_revision():
    root = Path(pipeline.__file__).resolve().parent.parent
    try:
        revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (revision + ("-dirty" if dirty else "")) or None


def describe_environment(engine):
    """What produced a run: versions, code revision, machine, backend and devices."""
    versions = {"pipeline": pipeline.__version__, "python": platform.python_version(),
                **engines.host(engine.backend).versions(), "keras": keras.__version__,
                "numpy": np.__version__}
    return {
        "versions": versions,
        "git_revision": _git_revision(),
        "host": socket.gethostname(), "user": getpass.getuser(), "platform": platform.platform(),
        **engine.describe(),
        "command": " ".join(sys.argv),
    }


def _check_same_config(run, config):
    """Refuse a different config for a run that has taken a step; a run that failed
    before its first checkpoint may start again with a corrected config."""
    saved = run.path / CONFIG_FILE
    if not saved.exists():
        return
    # The file first: edited after the run trained (its seal in meta.json), it would
    # resume another config's run as if it were this one's.
    check_seal(saved, read_saved_config(saved), run.read_meta())
    # Compared as data, not text: the order of keys may change between versions.
    differing = differing_keys(read_saved_config(saved), yaml.safe_load(to_yaml(config)))
    if not differing or (not checkpoints(run.checkpoint_dir) and not run.streams()):
        return  # the same config, or nothing was trained with the old one
    raise RunConfigMismatch(
        f"{run.path} already holds a run with another config (differing: "
        f"{', '.join(differing)}); resume it with its own config "
        f"(python -m pipeline train {saved} --workdir {run.path}), choose another --workdir, "
        f"or delete {run.path} to start over")


def train_and_evaluate(config, workdir, probes_factory=None, echo=None):
    """Train `config` into `workdir`, resuming from its last checkpoint; returns meta.

    The run's status is recorded in meta.json: `finished`, `diverged` (a non-finite
    training loss: a result, with the step), `interrupted` (Ctrl-C or SIGTERM,
    re-raised; resumable) or `failed` (an exception, re-raised).
    `probes_factory(config, engine, model, optimizer, arrays)` returns probes run
    before steps; `echo(line)`, if given, is told where and how the run starts.
    """
    # A resumed run keeps the runtime it recorded (thread count: its numerics).
    recorded = RunDirectory(workdir).read_meta() if Path(workdir).is_dir() else None
    runtime = configure_runtime(config, recorded.runtime if recorded else None)
    engine = make_engine(config, runtime)
    # The data and the network before the run's folder is touched: a user's loader or
    # factory that fails is an error in the config and leaves nothing behind. (A run
    # that has its result is not built again.)
    built = None if recorded is not None and recorded.done else _load_and_build(config, engine)
    run = RunDirectory(workdir, writable=engine.is_chief)
    if run.writable:
        run.lock()
    try:
        return _resume_and_train(config, runtime, engine, run, built, probes_factory, echo)
    finally:
        run.close()  # also releases the lock, whatever happened


def _announce(echo, run, meta, start):
    devices = ", ".join(meta.devices or []) or "?"
    threads = meta.runtime.get("threads")
    threads = f", {threads} thread(s)" if threads else ""
    echo(f"{run.path}: {meta.backend} on {devices}{threads}, "
         + (f"resuming at step {start} of {meta.steps}" if start else f"{meta.steps} steps"))


def _load_and_build(config, engine):
    """(arrays, model, optimizer) of `config`."""
    arrays = load_arrays(config.data)
    return (arrays, *build_training_state(config, arrays, engine))


def _resume_and_train(config, runtime, engine, run, built, probes_factory, echo=None):
    _check_same_config(run, config)
    meta = run.read_meta()
    if meta.done:
        return meta
    arrays, model, optimizer = built or _load_and_build(config, engine)
    run.write_text(CONFIG_FILE, to_yaml(config))
    start = restore_latest(run.checkpoint_dir, model, optimizer, checkpoint_identity(config))
    if run.writable:
        run.check_resumable(start, meta.step, config.train.log_every)
        check_streams(run, start, yaml.safe_load(to_yaml(config)), meta)
    run.drop_records_after(start)
    previous = meta.backend
    if previous and previous != engine.backend and start > 0:
        # Allowed (checkpoints are keyed by variable path) and kept in the run's history:
        # the records from `step` on come from another backend's kernels.
        meta = meta.with_(backend_changes=(meta.backend_changes or []) + [
            {"step": start, "from": previous, "to": engine.backend}])
        if echo:
            echo(f"{run.path}: trained on {previous} up to step {start}, continuing on "
                 f"{engine.backend} (recorded in meta.json, backend_changes)")
    meta = meta.with_(
        **describe_environment(engine), seed=config.seed,
        config=yaml.safe_load(to_yaml(config)),  # the seal: claims and resumes check it
        sync_batch_norm=config.model.sync_batch_norm, status="running",
        error=None,  # an earlier attempt's; this one starts clean
        runtime={**dataclasses.asdict(runtime), "steps_per_call": config.train.steps_per_call},
        start_step=start, step=start, steps=config.train.steps,
        restarts=0 if meta.restarts is None else meta.restarts + 1,
        # The DLN's plateaus (pipeline.inputs.tasks), for the claims; None elsewhere.
        loss_levels=task_of(arrays).reference_levels(arrays),
        record_schema=records.VERSION, user_code=user_code(config) or None,
        probe_batch=records.STEP_BATCH)
    run.write_meta(meta)
    if echo:
        _announce(echo, run, meta, start)
    # The monotonic clock: a wall clock set back during a run would make this negative.
    began, wall_before = time.monotonic(), meta.wall_time_s or 0.0

    def wall_time():
        """Seconds of all attempts so far (earlier ones as their meta.json recorded)."""
        return wall_before + time.monotonic() - began
    state = TrainingState(config, run, engine, model, optimizer, arrays, meta, wall_time)
    try:
        run_loop(state, start, probes_factory(config, engine, model, optimizer, arrays)
                 if probes_factory else [])
    except BaseException as error:
        stop = interrupts.interrupt_behind(error)
        if stop is None:
            state.meta = state.meta.with_(status="failed", error=f"{type(error).__name__}: {error}")
            raise
        state.meta = state.meta.with_(
            status="interrupted", error=f"interrupted ({interrupts.describe(stop)})")
        if stop is error:
            raise
        raise stop from error  # the framework's error was the interrupt's: resumable
    finally:
        state.meta = state.meta.with_(wall_time_s=wall_time())
        run.write_meta(state.meta)
        run.close()
    return state.meta


def train_from_file(path, overrides=(), workdir=None, echo=None):
    """CLI entry: load a config file with overrides and train into `workdir`, with the
    probes the config switches on."""
    from pipeline.probes import make_probes
    config = load_config(path, overrides)
    workdir = workdir or default_workdir(path, config)
    return train_and_evaluate(config, workdir, probes_factory=make_probes, echo=echo)
