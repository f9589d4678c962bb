"""The TensorFlow engine: `tf.function` steps under a `tf.distribute` strategy (one
device, MirroredStrategy, TPUStrategy, MultiWorkerMirroredStrategy from TF_CONFIG).

Our own step rather than `Model.fit`, which fails under MultiWorkerMirroredStrategy in
Keras 3 (keras-team/keras#20585): a step run with `strategy.run` over
`distribute_datasets_from_function`, with Keras models, optimizers and losses.
"""

import contextlib

import keras
import tensorflow as tf
from tensorflow.python.eager import context

from pipeline.engines.tensorflow.strategy import describe_devices, make_strategy, strategy_name
from pipeline.inputs.data import make_dataset

# The step, the probes and the evaluation sums trace without AutoGraph: they have no
# Python control flow on tensors (loops are `ops.fori_loop`), and AutoGraph's rewriting
# of every function they call (the model's layers among them) took ~1.2 s of the 7.9 s
# CPU of a smoke run with every probe. The graphs, and the records, are the same bits
# (measured on VGG with BN, noisy BN and mixed precision, the DLN and ResNet-20). The
# loop of steps keeps it: its `while` is on tensors.
_WITHOUT_AUTOGRAPH = {"autograph": False}


@contextlib.contextmanager
def _without_arithmetic_rewrites():
    """Grappler's arithmetic optimizer off for the functions called within (TensorFlow
    reads the option when it instantiates a function, and keeps one instance a set of
    options). The options as they were are restored exactly (public API can set a
    value, not remove one: setting it back to on would re-instantiate the training
    step under other options)."""
    options = context.context()._optimizer_experimental_options
    saved = dict(options)
    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
    try:
        yield
    finally:
        options.clear()
        options.update(saved)
        context.context()._thread_local_data.function_call_options = None


class Engine:
    backend = "tensorflow"

    def __init__(self, config, runtime):
        self.config, self.runtime = config, runtime
        self.strategy = make_strategy(config.train.strategy)

    @property
    def replicas(self):
        return self.strategy.num_replicas_in_sync

    @property
    def is_chief(self):
        """True on the one worker that writes the run directory."""
        return self.strategy.extended.should_checkpoint

    @property
    def multi_worker(self):
        return strategy_name(self.strategy) == "MultiWorkerMirroredStrategy"

    def describe(self):
        return {"backend": self.backend, "devices": describe_devices(),
                "strategy": strategy_name(self.strategy), "replicas": self.replicas}

    def build(self, fn):
        with self.strategy.scope():
            return fn()

    def step_function(self, model, optimizer, task):
        """The compiled SGD step `(x, y) -> (loss, correct count)` on one replica's share
        of a global batch: forward, loss, gradients, the optimizer's update. The training
        loop runs it under the strategy; `make bench` times it alone."""
        global_batch = self.config.data.batch_size
        scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

        @tf.function(jit_compile=self.runtime.xla, **_WITHOUT_AUTOGRAPH)
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                outputs = model(x, training=True)
                loss = task.batch_loss(y, outputs, global_batch)
                to_differentiate = optimizer.scale_loss(loss) if scaled else loss
            variables = model.trainable_variables
            gradients = tape.gradient(to_differentiate, variables)
            # Keras' optimizer sums the gradients over replicas before applying them.
            optimizer.apply_gradients(zip(gradients, variables))
            return loss, task.correct_predictions(y, outputs)
        return replica_step

    def bare_loop(self, model, optimizer, task, batch, steps):
        """`() -> loss`: `steps` SGD steps on one fixed batch in one `tf.function` (a
        `tf.while_loop`): the floor `make bench` holds the whole training loop against
        (no input pipeline, records or per-call overhead)."""
        replica_step = self.step_function(model, optimizer, task)
        x, y = batch

        @tf.function
        def loop():
            loss = tf.constant(0.0)
            for _ in tf.range(steps):
                loss = self.strategy.reduce(tf.distribute.ReduceOp.SUM, self.strategy.run(
                    replica_step, args=(x, y))[0], axis=None)
            return loss
        return lambda: float(loop())

    def train_steps(self, model, optimizer, task, arrays, start_step):
        """`(count) -> (losses, corrects)` as NumPy arrays of the steps taken: step k's
        values are those of its batch before its update. Several steps run inside one
        `tf.function` (a `tf.while_loop`), which spares the per-call overhead (comparable
        to a whole DLN step); `count` is a tensor, so every call length shares one trace."""
        config = self.config
        strategy = self.strategy
        iterator = iter(strategy.distribute_datasets_from_function(
            lambda context: make_dataset(config, "train", arrays=arrays, start_step=start_step,
                                         input_context=context)))
        replica_step = self.step_function(model, optimizer, task)

        def one_step():
            loss, correct = strategy.run(replica_step, args=next(iterator))
            reduce = tf.distribute.ReduceOp.SUM
            return (strategy.reduce(reduce, loss, axis=None),
                    strategy.reduce(reduce, correct, axis=None))

        @tf.function
        def steps(count):
            losses = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
            corrects = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
            taken, finite = tf.constant(0), tf.constant(True)
            while taken < count and finite:
                loss, correct = one_step()
                losses = losses.write(taken, loss)
                corrects = corrects.write(taken, correct)
                finite = tf.math.is_finite(loss)
                taken += 1
            return losses.stack(), corrects.stack()

        return lambda count: tuple(v.numpy() for v in steps(tf.constant(count)))

    def summed(self, fn, dataset):
        """A function `(*args) -> sum over `dataset` of fn(x, y, *args)` (a float32
        vector, as NumPy), compiled and distributed once: the batches are split across
        replicas and the sums read back once per call."""
        distributed = self.strategy.experimental_distribute_dataset(dataset)
        # reduce_retracing: the last batch is smaller.
        compiled = tf.function(fn, reduce_retracing=True, **_WITHOUT_AUTOGRAPH)

        def total(*args):
            result = 0.0
            for x, y in distributed:
                parts = self.strategy.run(compiled, args=(x, y, *args))
                result += self.strategy.reduce(tf.distribute.ReduceOp.SUM, parts, axis=None)
            return result.numpy()
        return total

    # The probes' primitives.

    def compile(self, fn):
        """`fn` as a `tf.function`, run without Grappler's arithmetic rewrites: on a
        large probe graph (ICS on a ResNet with noisy BN: three forward and backward
        passes, ~10,000 nodes) they regroup sums in an order that changes from one
        process to the next, so the probe's last bits did (measured: three processes,
        three different records; with the rewrites off, the same)."""
        compiled = tf.function(fn, **_WITHOUT_AUTOGRAPH)

        def call(*args):
            with _without_arithmetic_rewrites():
                return compiled(*args)
        return call

    def values(self, variables):
        """Copies of the variables' current values (`v.value` is the variable itself)."""
        return [tf.identity(v.value) for v in variables]

    def device_batch(self, batch):
        return batch

    def value_and_grad(self, fn, values):
        """`fn(values)` (a scalar) and its gradient with respect to the list `values`."""
        with tf.GradientTape() as tape:
            tape.watch(values)
            value = fn(values)
        return value, tape.gradient(value, values)

    def hessian_vector_product(self, fn, values, vector):
        """H v for the Hessian H of `fn` at `values` (double backpropagation)."""
        with tf.GradientTape() as outer:
            outer.watch(values)
            _, grads = self.value_and_grad(fn, values)
            directional = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, vector)])
        return outer.gradient(directional, values)

    def optimizer_update(self, optimizer, variables):
        return ShadowUpdate(optimizer, variables)


class ShadowUpdate:
    """The optimizer's own update rule applied to copies: `update(values, grads,
    update.state())` gives the updated values. A clone of the optimizer on shadow
    variables, built once, takes the given state at each call, so no real variable is
    written. (Keras' `stateless_apply` would do this, but the TensorFlow backend refuses
    it.)"""

    def __init__(self, optimizer, variables):
        # Gradients here are unscaled, so a loss-scaling wrapper's inner optimizer applies.
        self.source = getattr(optimizer, "inner_optimizer", optimizer)
        self.clone = type(self.source).from_config(self.source.get_config())
        # Fresh storage: `v.value` is the backing tf.Variable itself, not a copy.
        self.shadows = [keras.Variable(v.numpy(), name=f"shadow_{k}")
                        for k, v in enumerate(variables)]
        self.clone.build(self.shadows)
        if [tuple(v.shape) for v in self.clone.variables] != [
                tuple(v.shape) for v in self.source.variables]:
            raise ValueError(f"cannot mirror the state of {type(self.source).__name__} for the "
                             "ICS probe: its variables differ from a fresh clone's")

    def state(self):
        """Copies of the optimizer's variables (iteration count, slots) as they are now."""
        return [tf.identity(v.value) for v in self.source.variables]

    def __call__(self, values, grads, state):
        for shadow, value in zip(self.shadows, values):
            shadow.assign(value)
        for copy, value in zip(self.clone.variables, state):
            copy.assign(value)
        self.clone.apply_gradients(zip(grads, self.shadows))
        return [tf.identity(shadow.value) for shadow in self.shadows]
