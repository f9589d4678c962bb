"""Checkpoints of model and optimizer variables as `.npz` files, written atomically.

Everything that makes the continuation of a run bit-identical is a Keras variable:
weights, BN moving statistics, the noise layers' seed-generator states, and the
optimizer's iteration count and slots. So a checkpoint is simply all of them, keyed by
variable path (`block1_conv1/kernel`, `sgd/iteration`): the paths are the same on both
backends, so a checkpoint written on TensorFlow resumes on JAX and back (values are
cast to the reading backend's dtypes, e.g. int64 <-> uint32 seed states).
(The data stream needs no state: batch t is a function of the seed and t.)
"""

import io
import re
from pathlib import Path

import numpy as np

from pipeline.core.errors import InputError
from pipeline.core.runs import atomic_write_bytes

PATTERN = re.compile(r"ckpt-(\d+)\.npz$")


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


def save_checkpoint(directory, step, model, optimizer, keep=2):
    """Write `ckpt-<step>.npz` (weights after `step` updates); keep the newest `keep`."""
    directory = Path(directory)
    buffer = io.BytesIO()
    np.savez(buffer, **{key: np.asarray(v.numpy()) for key, v in _tracked(model, optimizer).items()})
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


def restore_latest(directory, model, optimizer, warn=None):
    """Load the newest intact checkpoint into the variables; returns its step, or 0 if
    there is none. A checkpoint that cannot be read (truncated, garbage) or that holds a
    non-finite value (a NaN weight would train on to a "finished" run of garbage: the
    loss is checked only from the next step on) is reported through `warn` and the next
    older one is tried."""
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
        return int(PATTERN.search(path.name).group(1))
    return 0
