"""Activation and weight distributions of chosen layers over training (paper Fig 1, 2, 6, 8).

For each layer #i: its normalized output (the norm layer after it, found by role in the
model's graph, `pipeline.nets.models.norm_after`, or the layer's own output when there
is none), computed in training mode as the training step sees it
(batch statistics, noise) without touching any state. Recorded: quantiles, mean, std,
per-channel means and variances (their change between records is paper Fig 8), a fixed
seeded sample of raw values (for histogram/ridge plots) and the kernel's quantiles, one
entry of `per_layer` per layer, with its `layer` index.
"""


import keras
import numpy as np

from pipeline.core.probe_settings import DistributionsConfig
from pipeline.nets.feature_major import batch_major
from pipeline.nets.models import norm_after
from pipeline.probes.schedule import Schedule
from pipeline.probes.stateless import resolve_layers, to_python

NAME = "distributions"
Config = DistributionsConfig  # its settings, the config section probes.distributions
QUANTILES = (0.05, 0.15, 0.5, 0.85, 0.95)


class Probe:
    name = NAME

    def __init__(self, probe_config, context):
        config, model, self.engine = context.config, context.model, context.engine
        self.schedule = Schedule.of(probe_config, context.config.train.steps)
        self.batches = context.batches
        chosen = resolve_layers(probe_config.layers, NAME, context)
        self.indices = [index for index, _ in chosen]
        self.names = [layer.name for _, layer in chosen]
        self.kernels = [layer.kernel for _, layer in chosen]
        # Batch-major, as the statistics below read them (the DLN's are feature-major).
        outputs = [batch_major(norm_after(model, layer).output) for _, layer in chosen]
        self.taps = keras.Model(model.inputs, outputs)  # shares the model's variables
        rng = np.random.default_rng(config.seed)
        per_example = [int(np.prod(o.shape[1:])) for o in outputs]
        batch = config.data.batch_size
        self.sample_positions = [np.sort(rng.choice(batch * n, min(probe_config.sample_size,
                                                                   batch * n), replace=False))
                                 for n in per_example]
        self._measure = self.engine.compile(self._measure_graph)

    def _measure_graph(self, x, trainable, non_trainable):
        outputs, _ = self.taps.stateless_call(trainable, non_trainable, x, training=True)
        return outputs if isinstance(outputs, (list, tuple)) else [outputs]

    def __call__(self, step):
        x, _ = self.batches(step)
        trainable = self.engine.values(self.taps.trainable_variables)
        non_trainable = self.engine.values(self.taps.non_trainable_variables)
        per_layer = []
        for index, name, kernel, positions, out in zip(
                self.indices, self.names, self.kernels, self.sample_positions,
                self._measure(x, trainable, non_trainable)):
            values = np.asarray(out).astype(np.float64)
            channels = values.reshape(-1, values.shape[-1])
            per_layer.append({
                "layer": index, "name": name, "quantiles": np.quantile(values, QUANTILES),
                "mean": values.mean(), "std": values.std(),
                "channel_mean": channels.mean(axis=0), "channel_var": channels.var(axis=0),
                "sample": values.reshape(-1)[positions],
                "kernel_quantiles": np.quantile(np.asarray(kernel.value), QUANTILES),
            })
        return to_python({"distributions/quantile_levels": np.array(QUANTILES),
                          "distributions/per_layer": per_layer})
