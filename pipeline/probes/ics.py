"""Internal covariate shift, the paper's Definition 2.1.

For layer i at step t, on the same batch: G = grad of the loss w.r.t. W_i at theta;
G' = the same gradient after every trainable variable *before* layer i (forward order,
BN gamma/beta included) has taken this step's real optimizer update (momentum included).
The update is the optimizer's own rule applied to copies of the variables and of the
optimizer's state (the engine's `optimizer_update`), so neither model nor optimizer
changes. W_i = the layer's kernel and bias. Records the step's training loss (the
probe's own, for comparisons at matched progress) and per layer (`per_layer`, each
entry with its `layer` index): ||G - G'||_2, ||G - G'|| / ||G|| and cos(G, G'). Besides,
the record's oscillation indicator `next_cosine` (PROTOCOL.md section 8): cos(g, g+) of
the whole gradient g and the gradient g+ after *every* variable has taken the step's
update, on the same batch; below 0, the step overshoots (one forward+backward more).
"""


import numpy as np
from keras import ops

from pipeline.core.probe_settings import IcsConfig
from pipeline.probes.schedule import Schedule
from pipeline.probes.stateless import dot, global_norm, resolve_layers, to_python

NAME = "ics"
Config = IcsConfig  # its settings, the config section probes.ics


class Probe:
    name = NAME

    def __init__(self, probe_config, context):
        self.schedule = Schedule.of(probe_config, context.config.train.steps)
        self.objective, self.batches = context.objective, context.batches
        model = context.model
        positions = {id(v): k for k, v in enumerate(model.trainable_variables)}
        self.layers = []
        for index, layer in resolve_layers(probe_config.layers, NAME, context):
            own = [positions[id(v)] for v in layer.trainable_variables]
            # "Before layer i" = every trainable variable earlier in forward order.
            self.layers.append((index, layer.name, own, min(own)))
        self.update = context.engine.optimizer_update(context.optimizer,
                                                      model.trainable_variables)
        self._measure = context.engine.compile(self._measure_graph)

    def _measure_graph(self, x, y, trainable, non_trainable, optimizer_state):
        loss, grads = self.objective.loss_and_grads(trainable, non_trainable, x, y)
        updated = self.update(trainable, grads, optimizer_state)
        _, next_grads = self.objective.loss_and_grads(updated, non_trainable, x, y)
        next_cosine = dot(grads, next_grads) / (global_norm(grads) * global_norm(next_grads))
        results = []
        for _, _, own, first in self.layers:
            shifted = [u if k < first else w
                       for k, (u, w) in enumerate(zip(updated, trainable))]
            _, shifted_grads = self.objective.loss_and_grads(shifted, non_trainable, x, y)
            g = [grads[k] for k in own]
            g_shifted = [shifted_grads[k] for k in own]
            difference = global_norm([a - b for a, b in zip(g, g_shifted)])
            norm, norm_shifted = global_norm(g), global_norm(g_shifted)
            results.append(ops.stack([difference, difference / norm,
                                      dot(g, g_shifted) / (norm * norm_shifted)]))
        return loss, next_cosine, ops.stack(results)

    def __call__(self, step):
        x, y = self.batches(step)
        loss, next_cosine, measured = self._measure(x, y, *self.objective.values(),
                                                    self.update.state())
        return to_python({"ics/loss": loss, "ics/next_cosine": next_cosine, "ics/per_layer": [
            {"layer": index, "name": name, "l2": l2, "relative_l2": relative, "cosine": cosine}
            for (index, name, _, _), (l2, relative, cosine) in zip(self.layers,
                                                                  np.asarray(measured))]})
