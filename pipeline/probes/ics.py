"""Internal covariate shift, the paper's Definition 2.1.

For layer i at step t, on the same batch: G = grad of the loss w.r.t. W_i at theta;
G' = the same gradient after every trainable variable *before* layer i (forward order,
BN gamma/beta included) has taken this step's real optimizer update (momentum included).
The update is computed by a clone of the optimizer on shadow copies of the variables and
of the optimizer's state (`ShadowUpdate`), so neither model nor optimizer changes.
(Keras' `stateless_apply` would do this, but the TensorFlow backend refuses it.)
W_i = the layer's kernel and bias. Records ||G - G'||_2, ||G - G'|| / ||G|| and cos(G, G').
"""

import keras
import tensorflow as tf

from pipeline.probes.stateless import dot, global_norm, resolve_layers, to_python


class ShadowUpdate:
    """The optimizer's own update rule applied to copies: call with variable values and
    gradients, get the updated values. Built once; no real variable is written."""

    def __init__(self, optimizer, variables):
        # Gradients here are unscaled, so a loss-scaling wrapper's inner optimizer applies.
        self.source = getattr(optimizer, "inner_optimizer", optimizer)
        self.clone = type(self.source).from_config(self.source.get_config())
        # Fresh storage: `v.value` is the backing tf.Variable itself, not a copy.
        self.shadows = [keras.Variable(v.numpy(), name=f"shadow_{k}") for k, v in enumerate(variables)]
        self.clone.build(self.shadows)
        if [tuple(v.shape) for v in self.clone.variables] != [
                tuple(v.shape) for v in self.source.variables]:
            raise ValueError(f"cannot mirror the state of {type(self.source).__name__} for the "
                             "ICS probe: its variables differ from a fresh clone's")

    def __call__(self, values, grads):
        for shadow, value in zip(self.shadows, values):
            shadow.assign(value)
        for copy, original in zip(self.clone.variables, self.source.variables):
            copy.assign(original)
        self.clone.apply_gradients(zip(grads, self.shadows))
        return [tf.identity(shadow.value) for shadow in self.shadows]


class ICSProbe:
    name = "ics"

    def __init__(self, probe_config, config, objective, optimizer, batches):
        self.every = probe_config.every
        self.objective, self.batches = objective, batches
        model = objective.model
        positions = {id(v): k for k, v in enumerate(model.trainable_variables)}
        self.layers = []
        for index, layer in resolve_layers(probe_config.layers, "ics", config.model.family, model):
            own = [positions[id(v)] for v in layer.trainable_variables]
            # "Before layer i" = every trainable variable earlier in forward order.
            self.layers.append((index, own, min(own)))
        self.update = ShadowUpdate(optimizer, model.trainable_variables)
        self._measure = tf.function(self._measure_graph)

    def _measure_graph(self, x, y, trainable, non_trainable):
        _, grads = self.objective.loss_and_grads(trainable, non_trainable, x, y)
        updated = self.update(trainable, grads)
        results = []
        for _, own, first in self.layers:
            shifted = [u if k < first else w
                       for k, (u, w) in enumerate(zip(updated, trainable))]
            _, shifted_grads = self.objective.loss_and_grads(shifted, non_trainable, x, y)
            g = [grads[k] for k in own]
            g_shifted = [shifted_grads[k] for k in own]
            difference = global_norm([a - b for a, b in zip(g, g_shifted)])
            norm, norm_shifted = global_norm(g), global_norm(g_shifted)
            results.append(tf.stack([difference, difference / norm,
                                     dot(g, g_shifted) / (norm * norm_shifted)]))
        return tf.stack(results)

    def __call__(self, step):
        x, y = self.batches(step)
        measured = self._measure(x, y, *self.objective.values()).numpy()
        record = {}
        for (index, _, _), (l2, relative, cosine) in zip(self.layers, measured):
            record[f"ics/layer{index}_l2"] = l2
            record[f"ics/layer{index}_relative_l2"] = relative
            record[f"ics/layer{index}_cosine"] = cosine
        return to_python(record)
