"""Checkpoints of model and optimizer variables as `.npz` files, written atomically.

Everything that makes the continuation of a run bit-identical is a Keras variable:
weights, BN moving statistics, the noise layers' seed-generator states, and the
optimizer's iteration count and slots. So a checkpoint is simply all of them, keyed by
variable path (`block1_conv1/kernel`, `sgd/iteration`): the paths are the same on both
backends, so a checkpoint written on TensorFlow resumes on JAX and back (values are
cast to the reading backend's dtypes, e.g. int64 <-> uint32 seed states).
(The data stream needs no state: batch t is a function of the seed and t.)

Each checkpoint also proves whose it is: beside the variables it stores its run's
identity (`IDENTITY`: the fingerprint of the config that determines the numbers, seed
included) and its step. A resume checks both against the run and the file name, and the
step against the optimizer's own iteration count; a checkpoint that fails is named and
skipped like a damaged one, never resumed (another seed's checkpoint, or an older one
renamed to a newer step, would continue as if it were this run's).
"""

import io
import re
from pathlib import Path

import numpy as np

from pipeline.core.errors import InputError
from pipeline.core.runs import atomic_write_bytes

PATTERN = re.compile(r"ckpt-(\d+)\.npz$")
IDENTITY, STEP = "_run/fingerprint", "_run/step"  # stored beside the variables' paths
ITERATION = "/iteration"  # the optimizer's step counter's path ends so ("sgd/iteration")


class CheckpointMismatch(InputError):
    """A run directory's checkpoint holds another model's or optimizer's variables."""


def _tracked(model, optimizer):
    """{path: variable}. Every variable is named explicitly (layers, the optimizer
    `sgd`, seed generators after their layer), so no path depends on what else the
    process built, as Keras' automatic names (`sgd_1`) would."""
    variables = list(model.variables) + list(optimizer.variables)
    tracked = {v.path: v for v in variables}
    if len(tracked) != len(variables):
        raise ValueError("two variables share a path; name every layer of the model")
    return tracked


def save_checkpoint(directory, step, model, optimizer, identity, keep=2):
    """Write `ckpt-<step>.npz` (weights after `step` updates, the run's `identity` and
    the step); keep the newest `keep`."""
    directory = Path(directory)
    buffer = io.BytesIO()
    values = {key: np.asarray(v.numpy()) for key, v in _tracked(model, optimizer).items()}
    np.savez(buffer, **values, **{IDENTITY: np.array(identity), STEP: np.array(step, np.int64)})
    atomic_write_bytes(directory / f"ckpt-{step:08d}.npz", buffer.getvalue())
    for old in checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)


def checkpoints(directory):
    """Checkpoint files of `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if PATTERN.search(p.name))


def _nonfinite(values):
    """'N of M variables, e.g. <path>' for the floating-point arrays of `values` that hold
    a NaN or an infinity ('' if none)."""
    bad = sorted(key for key, value in values.items()
                 if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all())
    return f"{len(bad)} of {len(values)} variables, e.g. {bad[0]}" if bad else ""


def _not_this_runs(values, identity, step):
    """Why a checkpoint's stored identity and step do not prove it is step `step` of the
    run `identity` ('' if they do). Checkpoints written before they carried their
    identity are taken as they are."""
    if IDENTITY not in values:
        return ""
    stored, stored_step = str(values.pop(IDENTITY)), int(values.pop(STEP))
    iterations = [int(v) for key, v in values.items() if key.endswith(ITERATION)]
    if stored != identity:
        return f"it belongs to another run (config fingerprint {stored}, this run's {identity})"
    if stored_step != step:
        return f"it holds step {stored_step}, not the {step} of its file name"
    if iterations and iterations[0] != step:
        return f"its optimizer has taken {iterations[0]} steps, not {step}"
    return ""


def restore_latest(directory, model, optimizer, identity, warn=None):
    """Load the newest intact checkpoint of this run (`identity`) into the variables;
    returns its step, or 0 if there is none. A checkpoint that cannot be read (truncated,
    garbage), that holds a non-finite value (a NaN weight would train on to a "finished"
    run of garbage: the loss is checked only from the next step on) or that does not
    prove it is this run's at its step is reported through `warn` and the next older one
    is tried."""
    import sys
    import zipfile
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    tracked = _tracked(model, optimizer)
    for path in reversed(checkpoints(directory)):
        try:
            with np.load(path) as saved:
                values = {key: saved[key] for key in saved.files}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as error:
            warn(f"{path} is damaged ({type(error).__name__}: {error}); trying an older "
                 "checkpoint")
            continue
        step = int(PATTERN.search(path.name).group(1))
        foreign = _not_this_runs(values, identity, step)
        if foreign:
            warn(f"{path} is not this run's checkpoint: {foreign}; skipped, trying an older "
                 "checkpoint")
            continue
        nonfinite = _nonfinite(values)
        if nonfinite:
            warn(f"{path} holds non-finite values ({nonfinite}); trying an older checkpoint")
            continue
        if {key: tuple(v.shape) for key, v in values.items()} != {
                key: tuple(v.shape) for key, v in tracked.items()}:
            raise CheckpointMismatch(
                f"{path} was written by a different model or optimizer (variables differ); "
                "use a new --workdir or delete the run directory to start over")
        for key, variable in tracked.items():
            variable.assign(values[key].astype(variable.dtype))
        return step
    return 0
