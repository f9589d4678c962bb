"""What every probe shares: the batch of a step, and the training objective evaluated
at arbitrary parameter values without touching the model's state."""

import numpy as np
import tensorflow as tf

from pipeline.data import TrainStream
from pipeline.losses import batch_loss
from pipeline.models import weight_layers

# PROTOCOL.md section 3-4 defaults, as 1-based weight-layer indices ("layer #i").
DEFAULT_LAYERS = {
    "ics": {"vgg": [5, 10], "dln": [9, 17]},
    "distributions": {"vgg": [3, 11], "dln": [1, 11, 24]},
}


class BatchSource:
    """The global training batch of a step (the one the train step uses), cached so
    that several probes at the same step share one."""

    def __init__(self, config, arrays):
        self.stream = TrainStream(config, arrays)
        self._step, self._batch = None, None

    def __call__(self, step):
        if step != self._step:
            self._step, self._batch = step, self.stream.batch(step)
        return self._batch


class StatelessObjective:
    """The training loss of `model` at given variable values, in training mode (batch
    statistics, noise), via `stateless_call`: moving statistics and seed states are
    read from the given values and their updates discarded."""

    def __init__(self, model, family, global_batch):
        self.model, self.family, self.global_batch = model, family, global_batch

    def values(self):
        """Current (trainable, non-trainable) variable values, as tensors."""
        return ([tf.identity(v.value) for v in self.model.trainable_variables],
                [tf.identity(v.value) for v in self.model.non_trainable_variables])

    def loss(self, trainable, non_trainable, x, y):
        outputs, _ = self.model.stateless_call(trainable, non_trainable, x, training=True)
        return batch_loss(self.family, y, outputs, self.global_batch)

    def loss_and_grads(self, trainable, non_trainable, x, y):
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            loss = self.loss(trainable, non_trainable, x, y)
        return loss, tape.gradient(loss, trainable)


def global_norm(tensors):
    """l2 norm of the concatenation of `tensors` (float32 scalar)."""
    return tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(tf.cast(t, tf.float32))) for t in tensors]))


def dot(a, b):
    return tf.add_n([tf.reduce_sum(tf.cast(x, tf.float32) * tf.cast(y, tf.float32))
                     for x, y in zip(a, b)])


def resolve_layers(requested, probe, family, model):
    """1-based weight-layer indices -> (index, layer) pairs, with a clear error."""
    indices = list(requested) if requested else DEFAULT_LAYERS[probe][family]
    layers = weight_layers(model)
    bad = [i for i in indices if not 1 <= i <= len(layers)]
    if bad:
        raise ValueError(f"probes.{probe}.layers={indices}: {bad} out of range; this "
                         f"{family} model has weight layers 1..{len(layers)}")
    return [(i, layers[i - 1]) for i in indices]


def to_python(values):
    """Tensors/arrays -> floats and lists of floats for JSON records."""
    out = {}
    for key, value in values.items():
        value = np.asarray(value)
        out[key] = float(value) if value.ndim == 0 else value.astype(float).tolist()
    return out
