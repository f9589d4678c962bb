"""The contract every backend's `Engine` honours (pipeline.engines.<backend>.engine).

The training loop, the evaluation and the probes are written once against this
interface; an engine owns the devices (a `tf.distribute` strategy, or JAX's devices).
Values ("the engine's values") are the backend's arrays: tensors on TensorFlow, JAX
arrays on JAX; the functions given to `compile`, `value_and_grad` and
`hessian_vector_product` are written with `keras.ops`.
"""

from typing import Any, Callable, Protocol, Sequence, Tuple

import numpy as np


class OptimizerUpdate(Protocol):
    """The optimizer's real update rule on copies; nothing real is written."""

    def state(self) -> list:
        """The optimizer's variables (iteration count, slots) as values, now."""

    def __call__(self, values: list, grads: list, state: list) -> list:
        """The values after one update with `grads` from optimizer state `state`; may be
        called inside a compiled function."""


class Engine(Protocol):
    backend: str           # Keras' name of the backend
    replicas: int          # devices a global batch is split across
    is_chief: bool         # this process writes the run directory
    multi_worker: bool     # several processes train together

    def describe(self) -> dict:
        """For meta.json: backend, devices, strategy, replicas."""

    def build(self, fn: Callable[[], Any]) -> Any:
        """`fn()` (creating model and optimizer) with its variables placed on the devices."""

    def step_function(self, model, optimizer, task) -> Callable:
        """The compiled SGD step `(x, y) -> (loss, correct count)` on a global batch
        (forward, loss, gradients, the optimizer's update), the one `train_steps` runs;
        the variables carry the state between calls."""

    def bare_loop(self, model, optimizer, task, batch: tuple, steps: int) -> Callable[[], float]:
        """`() -> loss`: `steps` SGD steps on one fixed global batch in one compiled
        program, the state carried between calls (the floor of `make bench`)."""

    def train_steps(self, model, optimizer, task, arrays, start_step
                    ) -> Callable[[int], Tuple[np.ndarray, np.ndarray]]:
        """`(count) -> (losses, corrects)`: up to `count` updates on the next global batches
        of the stream from `start_step`, stopping after the first non-finite loss (that
        step's update applied, none after it); NumPy arrays of the steps taken, step k's
        values those of its batch before its update."""

    def summed(self, fn: Callable, dataset) -> Callable[..., np.ndarray]:
        """`(*args) ->` the sum over `dataset` of `fn(x, y, *args)` (a float32 vector),
        compiled once, the batches split across the devices (evaluation)."""

    def compile(self, fn: Callable) -> Callable:
        """`fn` compiled (traced once per input signature)."""

    def values(self, variables: Sequence) -> list:
        """Copies of the variables' current values, placed for compiled functions."""

    def device_batch(self, batch: tuple) -> tuple:
        """A host batch (x, y) placed as a training step would see it."""

    def value_and_grad(self, fn: Callable, values: list) -> Tuple[Any, list]:
        """`fn(values)` (a scalar) and its gradient with respect to the list `values`."""

    def hessian_vector_product(self, fn: Callable, values: list, vector: list) -> list:
        """H v for the Hessian H of `fn` at `values`."""

    def optimizer_update(self, optimizer, variables: Sequence) -> OptimizerUpdate:
        """The optimizer's update rule on copies (see `OptimizerUpdate`)."""
