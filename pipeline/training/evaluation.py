"""Evaluation on the test split, with BatchNorm statistics recomputed on training batches.

PROTOCOL.md section 2 [D], "PreciseBN" (Wu & Johnson 2021, arXiv:2105.07576): before
evaluating, every BN-family layer's statistics are the plain average of its batch
statistics over a fixed set of training batches (`eval.bn_batches`), computed in
training mode with the noise off. Reason: with noise only in training, the moving
averages of later layers are averages over noisy activations, and the clean network
evaluates badly (noisy BN 0.85 test accuracy with moving averages, 0.99 recomputed, on
the demo's own checkpoints). Nothing of the training state changes: the statistics
and the evaluation go through `stateless_call`, so weights, moving statistics and seed
states stay as they were and a run's training records do not depend on the choice.
Written once for both engines: the engine compiles, splits the batches and sums.
"""

import contextlib

from keras import ops

from pipeline.inputs.data import TrainStream
from pipeline.inputs.tasks import task_of
from pipeline.nets.layers import StatefulNorm


def _stateful_norms(model):
    return [layer for layer in model.layers if isinstance(layer, StatefulNorm)]


def statistic_slots(model):
    """Positions in `model.non_trainable_variables` of every stateful norm's moving
    statistics, in model order (empty for a network without such layers)."""
    position = {id(v): k for k, v in enumerate(model.non_trainable_variables)}
    return [position[id(variable)] for layer in _stateful_norms(model)
            for variable in layer.moving_statistics()]


@contextlib.contextmanager
def batch_statistics_mode(model):
    """While a function traces in this block, a training-mode call of the model writes
    each stateful norm's *batch* statistics into its moving statistics and draws no
    noise (`StatefulNorm.batch_statistics_mode`)."""
    with contextlib.ExitStack() as stack:
        for layer in _stateful_norms(model):
            stack.enter_context(layer.batch_statistics_mode())
        yield


class RecomputedStatistics:
    """The BN-family statistics averaged over `count` fixed training batches (the
    batches of steps 0..count-1 of the run's stream), as a full list of non-trainable
    values for `stateless_call`: the current values with the statistics replaced.

    All batches go through one compiled loop, one call per evaluation (fewer dispatches
    than one call per batch; evaluation runs every `train.eval_every` steps).
    """

    def __init__(self, engine, model, config, arrays, count):
        self.engine, self.model = engine, model
        self.slots = statistic_slots(model)
        stream = TrainStream(config, arrays)
        # (count, batch, ...): the batches stacked, placed once.
        self.inputs = ops.stack([engine.device_batch(stream.batch(step))[0]
                                 for step in range(count)]) if self.slots else None
        self._averaged_statistics = engine.compile(self._averaged_statistics_graph)

    def _averaged_statistics_graph(self, trainable, non_trainable, inputs):
        def add_batch(index, totals):
            _, updated = self.model.stateless_call(trainable, non_trainable, inputs[index],
                                                   training=True)
            return [total + updated[k] for total, k in zip(totals, self.slots)]
        count = ops.shape(inputs)[0]
        # The mode is read while this traces: entered here, around the trace itself, it
        # holds for whichever model the traced function belongs to.
        with batch_statistics_mode(self.model):
            totals = ops.fori_loop(0, count, add_batch,
                                   [ops.zeros_like(non_trainable[k]) for k in self.slots])
        return [total / ops.cast(count, total.dtype) for total in totals]

    def __call__(self, trainable, non_trainable):
        """A new list: the values `non_trainable` with the statistics replaced by their
        averages at the weights `trainable` (both lists of the engine's values)."""
        recomputed = list(non_trainable)
        if not self.slots:
            return recomputed
        averaged = self._averaged_statistics(trainable, non_trainable, self.inputs)
        for slot, value in zip(self.slots, averaged):
            recomputed[slot] = value
        return recomputed


def make_evaluate(engine, config, model, test_dataset, arrays):
    """A function returning the test metrics over the whole test split.

    Keys: `test/loss` and `test/accuracy` with the statistics `eval.bn_statistics`
    names; with `recomputed` and BN-family layers, also `test/moving_stats_loss` and
    `test/moving_stats_accuracy` (the moving averages), so the gap can be shown.
    """
    task = task_of(arrays)
    recompute = config.eval.bn_statistics == "recomputed"
    statistics = (RecomputedStatistics(engine, model, config, arrays, config.eval.bn_batches)
                  if recompute else None)
    both = recompute and bool(statistics.slots)

    def sums(outputs, y):
        return [ops.sum(task.example_losses(y, outputs)), task.correct_predictions(y, outputs)]

    def batch_sums(x, y, trainable, current, recomputed):
        # Stateless even with the moving statistics: noise at inference (an option) then
        # draws from the current seed states without advancing them.
        outputs, _ = model.stateless_call(trainable, current, x, training=False)
        parts = [ops.cast(ops.shape(y)[0], "float32")] + sums(outputs, y)
        if both:
            outputs, _ = model.stateless_call(trainable, recomputed, x, training=False)
            parts += sums(outputs, y)
        return ops.stack(parts)

    summed = engine.summed(batch_sums, test_dataset)

    def evaluate():
        # One copy of the current values serves the statistics and the test pass.
        trainable = engine.values(model.trainable_variables)
        current = engine.values(model.non_trainable_variables)
        recomputed = statistics(trainable, current) if both else []
        totals = summed(trainable, current, recomputed)
        count, *values = (float(v) for v in totals)  # one device sync
        if not both:
            return task.metrics(*values[:2], count, "test/")
        return {**task.metrics(*values[2:], count, "test/"),
                **task.metrics(*values[:2], count, "test/moving_stats_")}
    return evaluate
