"""The JAX engine: `jax.jit` over Keras' `stateless_call` and the optimizer's
`stateless_apply` (keras.io, "Writing a training loop from scratch in JAX"), data
parallel over the devices with `keras.distribution.DataParallel`.

- Devices: `train.strategy` default uses one device; auto, mirrored and tpu all local
  devices; multi_worker calls `jax.distributed.initialize()` (on a TPU pod slice or a
  cluster it finds the coordinator itself) and uses every process's devices. Every
  process builds the same global batch from the seeded stream and hands JAX only its own
  devices' rows, so the batch of step t is the one TensorFlow sees.
- The step is one program over the global batch: BatchNorm's statistics are those of
  the global batch (what `sync_batch_norm` asks for on TensorFlow) and each element of
  the global batch gets its own noise.
- Several steps per call are dispatched asynchronously, one compiled step each, and
  their metrics read back once per call. A compiled loop over the steps would be a
  different XLA program per call length, and records must not depend on call lengths
  (kill-and-resume changes them).
"""

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import keras
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from pipeline.config import ConfigError
from pipeline.data import make_dataset


def _use_compilation_cache():
    """Keep compiled programs on disk (JAX_COMPILATION_CACHE_DIR, else
    ~/.cache/bnlab/jax): XLA compiles a VGG step with its probes for tens of seconds on a
    CPU, and every run of a sweep, every resume, compiles the same programs again."""
    if jax.config.jax_compilation_cache_dir is None:
        folder = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bnlab" / "jax"
        jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


class Engine:
    backend = "jax"

    def __init__(self, config, runtime):
        self.config, self.runtime = config, runtime
        _use_compilation_cache()
        if config.train.precision != "float32":
            raise ConfigError(f"train.precision={config.train.precision} runs on the TensorFlow "
                              "backend only; use train.precision=float32 with --backend jax")
        kind = config.train.strategy
        if kind == "multi_worker":
            jax.distributed.initialize()
        self.devices = jax.devices()[:1] if kind == "default" else jax.devices()
        if config.data.batch_size % len(self.devices):
            raise ConfigError(f"data.batch_size={config.data.batch_size} must be a multiple of "
                              f"the {len(self.devices)} devices it is split across")
        mesh = jax.sharding.Mesh(np.array(self.devices), ("batch",))
        self._split = NamedSharding(mesh, PartitionSpec("batch"))  # rows across devices
        self._replicated = NamedSharding(mesh, PartitionSpec())
        self.distribution = (keras.distribution.DataParallel(devices=self.devices)
                             if len(self.devices) > 1 else None)

    @property
    def replicas(self):
        return len(self.devices)

    @property
    def is_chief(self):
        return jax.process_index() == 0

    @property
    def multi_worker(self):
        return jax.process_count() > 1

    def describe(self):
        return {"backend": self.backend,
                "devices": [f"{d.platform.upper()}:{d.id}" for d in self.devices],
                "strategy": "DataParallel" if self.replicas > 1 else "OneDevice",
                "replicas": self.replicas, "processes": jax.process_count()}

    def build(self, fn):
        """Variables are created replicated over the devices under `DataParallel`."""
        if self.distribution is None:
            return fn()
        with self.distribution.scope():
            return fn()

    def _place(self, array, sharding):
        array = np.asarray(array)
        return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])

    def _pure_step(self, model, optimizer, task):
        """The compiled SGD step `(state, x, y, go) -> (state, loss, correct count, go)`
        on the global batch, state = (trainable, non-trainable, optimizer variables'
        values). A step entered with `go` false leaves the state as it is, and `go` turns
        false after a non-finite loss: the steps dispatched after the first non-finite
        loss of a call change nothing, as on an engine that stops there."""
        global_batch = self.config.data.batch_size

        def update(state, x, y):
            trainable, non_trainable, optimizer_state = state

            def loss_fn(trainable):
                outputs, updated = model.stateless_call(trainable, non_trainable, x, training=True)
                return task.batch_loss(y, outputs, global_batch), (outputs, updated)

            (loss, (outputs, non_trainable)), grads = jax.value_and_grad(
                loss_fn, has_aux=True)(trainable)
            trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, grads,
                                                                   trainable)
            return ((trainable, non_trainable, optimizer_state),
                    loss, task.correct_predictions(y, outputs))

        def step(state, x, y, go):
            updated, loss, correct = update(state, x, y)
            kept = jax.tree.map(lambda new, old: jnp.where(go, new, old), updated, state)
            return kept, loss, correct, jnp.logical_and(go, jnp.isfinite(loss))
        return jax.jit(step)

    def _state(self, model, optimizer):
        return (model.trainable_variables, model.non_trainable_variables, optimizer.variables)

    def step_function(self, model, optimizer, task):
        """The compiled SGD step as `(x, y) -> (loss, correct count)` on a global batch,
        carrying the state between calls (the variables keep their values): what
        `make bench` times."""
        step = self._pure_step(model, optimizer, task)
        state = [tuple(self.values(group) for group in self._state(model, optimizer))]

        def run(x, y):
            state[0], loss, correct, _ = step(state[0], self._place(x, self._split),
                                              self._place(y, self._split), jnp.array(True))
            return loss, correct
        return run

    def train_steps(self, model, optimizer, task, arrays, start_step):
        """`(count) -> (losses, corrects)` as NumPy arrays of the steps taken (up to and
        including the first non-finite loss): step k's values are those of its batch
        before its update."""
        batches = iter(make_dataset(self.config, "train", arrays=arrays, start_step=start_step))
        step = self._pure_step(model, optimizer, task)
        variables = self._state(model, optimizer)

        def steps(count):
            state = tuple(self.values(group) for group in variables)
            losses, corrects, go = [], [], jnp.array(True)  # not a Python bool: one trace
            for _ in range(count):  # dispatched asynchronously; no value is read here
                x, y = next(batches)
                state, loss, correct, go = step(state, self._place(x, self._split),
                                                self._place(y, self._split), go)
                losses.append(loss)
                corrects.append(correct)
            losses, corrects = np.asarray(jnp.stack(losses)), np.asarray(jnp.stack(corrects))
            for group, values in zip(variables, state):
                for variable, value in zip(group, values):
                    variable.assign(value)
            bad = np.flatnonzero(~np.isfinite(losses))
            taken = bad[0] + 1 if bad.size else count  # the call ends at the first bad step
            return losses[:taken], corrects[:taken]
        return steps

    def summed(self, fn, dataset):
        """A function `(*args) -> sum over `dataset` of fn(x, y, *args)` (a float32
        vector, as NumPy), compiled once. Each batch goes to every device whole (test
        batches need not divide evenly)."""
        compiled = jax.jit(fn)

        def total(*args):
            result = 0.0
            for x, y in dataset:
                result = result + compiled(self._place(x, self._replicated),
                                           self._place(y, self._replicated), *args)
            return np.asarray(result)
        return total

    # The probes' primitives.

    def compile(self, fn):
        return jax.jit(fn)

    def values(self, variables):
        """The variables' values, replicated over the devices. JAX arrays are immutable,
        so no copy is needed; the placement is explicit because compiled functions are
        cached per input placement, and fresh variables have none yet."""
        return [jax.device_put(v.value, self._replicated) for v in variables]

    def device_batch(self, batch):
        return tuple(self._place(part, self._split) for part in batch)

    def value_and_grad(self, fn, values):
        return jax.value_and_grad(fn)(values)

    def hessian_vector_product(self, fn, values, vector):
        """H v by forward-over-reverse differentiation (one jvp of the gradient)."""
        return jax.jvp(jax.grad(fn), (values,), (vector,))[1]

    def optimizer_update(self, optimizer, variables):
        return StatelessUpdate(self, optimizer)


class StatelessUpdate:
    """The optimizer's update on given values, via its `stateless_apply`: call with
    (values, grads, state()) inside a compiled function; nothing real is written."""

    def __init__(self, engine, optimizer):
        self.engine, self.optimizer = engine, optimizer

    def state(self):
        return self.engine.values(self.optimizer.variables)

    def __call__(self, values, grads, state):
        return self.optimizer.stateless_apply(state, grads, values)[0]
