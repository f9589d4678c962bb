"""Checkpoints of model and optimizer variables as `.npz` files, written atomically.

Everything that makes the continuation of a run bit-identical is a Keras variable:
weights, BN moving statistics, the noise layers' seed-generator states, and the
optimizer's iteration count and slots. So a checkpoint is simply all of them, by path.
(The data stream needs no state: batch t is a function of the seed and t.)
"""

import io
import re
from pathlib import Path

import numpy as np

from pipeline.runs import atomic_write_bytes

PATTERN = re.compile(r"ckpt-(\d+)\.npz$")


def _tracked(model, optimizer):
    # Keyed by position: Keras' automatic names (sgd_1/...) depend on what else the
    # process built, while the order of a model's and an optimizer's variables does not.
    variables = list(model.variables) + list(optimizer.variables)
    return {f"v{i:04d}": v for i, v in enumerate(variables)}


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


def restore_latest(directory, model, optimizer):
    """Load the newest checkpoint into the variables; returns its step, or 0 if none."""
    found = checkpoints(directory)
    if not found:
        return 0
    path = found[-1]
    tracked = _tracked(model, optimizer)
    with np.load(path) as saved:
        shapes = {key: tuple(saved[key].shape) for key in saved.files}
        if shapes != {key: tuple(v.shape) for key, v in tracked.items()}:
            raise ValueError(
                f"{path} was written by a different model or optimizer (variables differ); "
                "use a new --workdir or delete the run directory to start over")
        for key, variable in tracked.items():
            variable.assign(saved[key])
    return int(PATTERN.search(path.name).group(1))
