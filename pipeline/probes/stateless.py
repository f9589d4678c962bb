"""What every probe shares: the batch of a step, and the training objective evaluated
at arbitrary parameter values without touching the model's state. Backend-neutral:
arithmetic in `keras.ops`, differentiation and compilation from the engine."""

import dataclasses
from typing import Any

import numpy as np
from keras import ops

from pipeline.core.config import ConfigError
from pipeline.inputs.data import TrainStream
from pipeline.nets.models import weight_layers


class BatchSource:
    """The global training batch of a step (the one the train step uses), on the
    engine's devices, cached so that several probes at the same step share one."""

    def __init__(self, config, arrays, engine):
        self.stream, self.engine = TrainStream(config, arrays), engine
        self._step, self._batch = None, None

    def __call__(self, step):
        if step != self._step:
            self._step, self._batch = step, self.engine.device_batch(self.stream.batch(step))
        return self._batch


class StatelessObjective:
    """The training loss of `model` at given variable values, in training mode (batch
    statistics, noise), via `stateless_call`: moving statistics and seed states are
    read from the given values and their updates discarded."""

    def __init__(self, engine, model, task, global_batch):
        self.engine, self.model, self.task, self.global_batch = engine, model, task, global_batch

    def values(self):
        """Current (trainable, non-trainable) variable values, as copies."""
        return (self.engine.values(self.model.trainable_variables),
                self.engine.values(self.model.non_trainable_variables))

    def loss(self, trainable, non_trainable, x, y):
        outputs, _ = self.model.stateless_call(trainable, non_trainable, x, training=True)
        return self.task.batch_loss(y, outputs, self.global_batch)

    def loss_and_grads(self, trainable, non_trainable, x, y):
        return self.engine.value_and_grad(
            lambda values: self.loss(values, non_trainable, x, y), trainable)

    def hessian_vector_product(self, trainable, non_trainable, x, y, vector):
        return self.engine.hessian_vector_product(
            lambda values: self.loss(values, non_trainable, x, y), trainable, vector)


@dataclasses.dataclass(frozen=True)
class ProbeContext:
    """What a probe is built from."""
    config: Any      # the run's Config
    engine: Any
    model: Any
    optimizer: Any
    task: Any        # pipeline.inputs.tasks
    objective: StatelessObjective
    batches: Any     # step -> (x, y): a BatchSource, or a fixed batch (ProbeCallback)
    family: Any      # pipeline.nets.families.Family: the default layers of its probes


def global_norm(tensors):
    """l2 norm of the concatenation of `tensors` (float32 scalar)."""
    return ops.sqrt(sum(ops.sum(ops.square(ops.cast(t, "float32"))) for t in tensors))


def dot(a, b):
    return sum(ops.sum(ops.cast(x, "float32") * ops.cast(y, "float32")) for x, y in zip(a, b))


def resolve_layers(requested, probe, context):
    """1-based weight-layer numbers ("layer #i": the i-th layer with a kernel in forward
    order, `weight_layers`) -> (number, layer) pairs: `requested`, else the family's
    defaults; a clear error for a number the model does not have."""
    layers = weight_layers(context.model)
    indices = list(requested) if requested else context.family.default_layers(probe, len(layers))
    bad = [i for i in indices if not 1 <= i <= len(layers)]
    if bad:
        raise ConfigError(f"probes.{probe}.layers={indices}: {bad} out of range; this "
                          f"{context.family.name} model has {len(layers)} weight layers "
                          f"(layers with a kernel), numbered 1..{len(layers)}")
    return [(i, layers[i - 1]) for i in indices]


def to_python(values):
    """Tensors/arrays -> floats and lists of floats for JSON records; lists of dicts
    (entries of `per_layer`, `per_eta`) converted entry by entry."""
    out = {}
    for key, value in values.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            out[key] = [to_python(entry) for entry in value]
            continue
        if isinstance(value, (int, np.integer)):  # an index (a layer's), kept whole
            out[key] = int(value)
            continue
        if isinstance(value, str):  # a name (a layer's)
            out[key] = value
            continue
        value = np.asarray(value)
        out[key] = float(value) if value.ndim == 0 else value.astype(float).tolist()
    return out
