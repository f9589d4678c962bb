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
- Several steps per call run inside one compiled program: a loop over a stack of
  `CHUNK` batches whose trip count is an argument, so every call length (kill-and-resume
  changes them) runs the same XLA program and the records do not depend on it. A call
  longer than `CHUNK` steps is several such programs, dispatched back to back; the
  metrics are read once per call. Per-step dispatch from Python was most of a small
  model's step time (the BN DLN: ~4.9 ms a step dispatched one by one, ~3 ms of it XLA).
  Full-batch gradient descent places its one batch once and runs `FULL_BATCH_CHUNK`
  steps per program on it.
- A sweep's worker reuses a config's programs from seed to seed (`reuse_programs`).
"""

import collections
import dataclasses
import functools

import jax
import jax.numpy as jnp
import keras
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from pipeline.core import tool_homes
from pipeline.core.config import ConfigError, to_yaml
from pipeline.inputs.data import TrainStream


def _use_compilation_cache():
    """Keep compiled programs on disk (JAX_COMPILATION_CACHE_DIR, else
    ~/.cache/bnlab/jax): XLA compiles a VGG step with its probes for tens of seconds on a
    CPU, and every run of a sweep, every resume, compiles the same programs again."""
    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(tool_homes.project_cache() / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


# Programs reused across the runs of this process, when `reuse_programs()` was called
# (a sweep's worker does): {(config but its seed, devices, place, n-th at that place in
# the run): jitted function}. See `Engine._jit`.
_PROGRAMS = {}
_REUSE = False


def reuse_programs():
    """From now on, a run whose config differs from an earlier run's of this process at
    most in `seed` reuses that run's compiled programs instead of tracing its own."""
    global _REUSE
    _REUSE = True


# Steps per compiled program: long enough that dispatch is paid once per many steps,
# short enough that a stack of VGG batches (128 x 32 x 32 x 3 float32, 1.5 MB each)
# stays small and a call that ends early (an event is due) wastes no compute (the loop
# runs only the steps asked for; the unused batches of the stack are zeros).
CHUNK = 32
# ... and for full-batch gradient descent, whose one batch is placed once (40 kB for the
# DLN): dispatching a program of 32 steps cost the BN DLN ~3.5 % of its steps.
FULL_BATCH_CHUNK = 256


def _chunk_length(same_batch):
    """Steps per compiled program: `FULL_BATCH_CHUNK` on the one batch of full-batch
    descent, else `CHUNK` on a stack of batches."""
    return FULL_BATCH_CHUNK if same_batch else CHUNK


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
        self._stacked = NamedSharding(mesh, PartitionSpec(None, "batch"))  # (steps, rows, ...)
        self._replicated = NamedSharding(mesh, PartitionSpec())
        self.distribution = (keras.distribution.DataParallel(devices=self.devices)
                             if len(self.devices) > 1 else None)
        self._compiled_at = collections.Counter()

    @functools.cached_property
    def _fingerprint(self):
        """What the programs of this run depend on: the config but its seed, the devices."""
        return (to_yaml(dataclasses.replace(self.config, seed=0)),
                tuple(str(d) for d in self.devices))

    def _jit(self, fn):
        """`jax.jit(fn)`; with `reuse_programs()`, the jitted function an earlier run of
        this process made at the same place in its code (`fn`'s module and qualified
        name, and how many times this run compiled there before) for the same config but
        its seed. A sweep's worker trains seed after seed of one config: tracing Keras'
        `stateless_call` and loading the programs from the compilation cache cost a demo
        BN DLN run ~5 s (15-16 s in a worker on its own programs, 10-11 s on those of
        the seed before).

        Sound because nothing a program bakes in depends on the seed: the seed only sets
        values the programs take as arguments (initial weights, noise seed states, the
        curvature probe's start, the data), and everything they close over (the model's
        architecture, the optimizer's settings, the probes' settings and learning rates)
        follows from the rest of the config. The reused function closes over the earlier
        run's objects; they are only read while tracing, which a run of the same shapes
        does not repeat (tests/test_train.py: seed 1 on seed 0's programs writes the
        records of seed 1 alone; `make demo`'s records equal those of runs in processes of
        their own)."""
        if not _REUSE:
            return jax.jit(fn)
        place = f"{fn.__module__}.{fn.__qualname__}"
        self._compiled_at[place] += 1
        key = (self._fingerprint, place, self._compiled_at[place])
        if key not in _PROGRAMS:
            _PROGRAMS[key] = jax.jit(fn)
        return _PROGRAMS[key]

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
        """The SGD step `(state, x, y) -> (state, loss, correct count)` on the global
        batch, state = (trainable, non-trainable, optimizer variables' values)."""
        global_batch = self.config.data.batch_size

        def step(state, x, y):
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
        return step

    def _pure_chunk(self, model, optimizer, task, same_batch=False):
        """The compiled `(state, xs, ys, count, go) -> (state, losses, corrects, go)`: up
        to `count` (at most `CHUNK`) steps on the first batches of the stacks `xs`, `ys`,
        in one program whatever `count` is; with `same_batch`, up to `FULL_BATCH_CHUNK`
        steps, every one on their one batch. The loop stops after the first non-finite
        loss (that step's update applied, as on an engine that stops there) and `go`
        turns false; a chunk entered with `go` false changes nothing."""
        step = self._pure_step(model, optimizer, task)
        length = _chunk_length(same_batch)

        def chunk(state, xs, ys, count, go):
            _, loss, correct = jax.eval_shape(step, state, xs[0], ys[0])

            def body(carry):
                i, state, losses, corrects, _ = carry
                # A static index reads the batch in place; step i's copy sliced out of a
                # stack cost the BN DLN ~2 % of its step.
                at = 0 if same_batch else i
                state, loss, correct = step(state, xs[at], ys[at])
                return (i + 1, state, losses.at[i].set(loss), corrects.at[i].set(correct),
                        jnp.isfinite(loss))
            empty = (jnp.zeros((length,), loss.dtype), jnp.zeros((length,), correct.dtype))
            _, state, losses, corrects, go = jax.lax.while_loop(
                lambda carry: jnp.logical_and(carry[0] < count, carry[4]), body,
                (jnp.int32(0), state, *empty, go))
            return state, losses, corrects, go
        return self._jit(chunk)

    def _state(self, model, optimizer):
        return (model.trainable_variables, model.non_trainable_variables, optimizer.variables)

    def _stack(self, batches, length=CHUNK):
        """`length` host batches (fewer: padded with zeros) as device stacks, split over
        the devices along the batch axis."""
        xs, ys = (np.stack(part) for part in zip(*batches))
        pad = length - len(batches)
        if pad:
            xs, ys = (np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)]) for a in (xs, ys))
        return self._place(xs, self._stacked), self._place(ys, self._stacked)

    def _chunked(self, model, optimizer, task, same_batch=False):
        """`(state, next_stack, count) -> (state, losses, corrects)` (the state as device
        arrays, the metrics as NumPy arrays of the `count` steps: after the first
        non-finite loss's step, no update): `count` steps, a program's worth
        (`_chunk_length`) per compiled call, on the device stacks `next_stack(size)` gives
        (their first `size` batches used; with `same_batch`, their one batch for every
        step)."""
        chunk = self._pure_chunk(model, optimizer, task, same_batch)
        length = _chunk_length(same_batch)

        def run(state, next_stack, count):
            # `go` placed as the chunk's outputs are, so that the first chunk and the
            # next (fed the first's `go`) share one trace.
            chunks, go = [], self._place(np.array(True), self._replicated)
            for start in range(0, count, length):  # dispatched asynchronously
                size = min(length, count - start)
                xs, ys = next_stack(size)
                state, loss, correct, go = chunk(state, xs, ys, jnp.int32(size), go)
                chunks.append((loss, correct, size))
            # Cut on the host, once every chunk is dispatched: slicing on the device
            # compiled a program per call length.
            return (state, *(np.concatenate([np.asarray(part[k])[:part[2]] for part in chunks])
                             for k in (0, 1)))
        return run

    def step_function(self, model, optimizer, task):
        """The compiled SGD step as `(x, y) -> (loss, correct count)` on a global batch,
        carrying the state between calls (the variables keep their values), one step per
        call of the training loop's own program (tests compare it with `bare_loop`)."""
        run = self._chunked(model, optimizer, task)
        state = [tuple(self.values(group) for group in self._state(model, optimizer))]

        def one(x, y):
            state[0], loss, correct = run(state[0], lambda size: self._stack([(x, y)]), 1)
            return loss[0], correct[0]
        return one

    def bare_loop(self, model, optimizer, task, batch, steps):
        """`() -> loss`: `steps` SGD steps on one fixed batch in one compiled
        `lax.fori_loop`, carrying the state between calls: the floor `make bench` holds
        the whole training loop against (no input pipeline, records or dispatch)."""
        step = self._pure_step(model, optimizer, task)
        x, y = (self._place(part, self._split) for part in batch)

        @jax.jit
        def loop(state):
            def body(_, carry):
                state, loss, _ = step(carry[0], x, y)
                return state, loss
            return jax.lax.fori_loop(0, steps, body, (state, jnp.float32(0)))
        state = [tuple(self.values(group) for group in self._state(model, optimizer))]

        def run():
            state[0], loss = loop(state[0])
            return float(loss)
        return run

    def train_steps(self, model, optimizer, task, arrays, start_step):
        """`(count) -> (losses, corrects)` as NumPy arrays of the steps taken (up to and
        including the first non-finite loss): step k's values are those of its batch
        before its update."""
        variables = self._state(model, optimizer)
        stream = TrainStream(self.config, arrays)
        if stream.same_every_step:
            # Full-batch gradient descent: the batch, placed once, serves every step of
            # every call (the same step on the same values as a stack made per call).
            # Made per call, a stack cost the BN DLN ~0.1 ms a step on the host, ~15 %
            # of its step.
            run = self._chunked(model, optimizer, task, same_batch=True)
            batch = tuple(np.asarray(part) for part in stream.batch(start_step))
            stack = self._stack([batch], 1)

            def next_stack(size):
                return stack
        else:
            run = self._chunked(model, optimizer, task)
            # The stream is read `CHUNK` batches per tf.data element: read one batch at a
            # time it cost ~0.3-0.4 ms of Python a step (the iterator and the
            # conversion), a quarter of a standard DLN step. The same batches in the same
            # order; a call that ends inside a stack leaves the rest for the next call.
            stacks = iter(stream.dataset(start_step).batch(CHUNK))
            pending = collections.deque()

            def next_stack(size):
                batches = []
                for _ in range(size):
                    if not pending:
                        xs, ys = next(stacks)
                        pending.extend(zip(np.asarray(xs), np.asarray(ys)))
                    batches.append(pending.popleft())
                return self._stack(batches)

        def steps(count):
            state = tuple(self.values(group) for group in variables)
            state, losses, corrects = run(state, next_stack, count)
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
        compiled = self._jit(fn)

        def total(*args):
            result = 0.0
            for x, y in dataset:
                result = result + compiled(self._place(x, self._replicated),
                                           self._place(y, self._replicated), *args)
            return np.asarray(result)
        return total

    # The probes' primitives.

    def compile(self, fn):
        return self._jit(fn)

    def values(self, variables):
        """The variables' values, replicated over the devices. JAX arrays are immutable,
        so no copy is needed; the placement is explicit because compiled functions are
        cached per input placement, and fresh variables have none yet. A value placed so
        already (every value after the first call) is taken as it is: `device_put` cost
        ~19 us a variable even then, ~2 s of a BN DLN run (121 variables, ~850 calls)."""
        return [v.value if getattr(v.value, "sharding", None) == self._replicated
                else jax.device_put(v.value, self._replicated) for v in variables]

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
