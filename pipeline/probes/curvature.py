"""Top Hessian eigenvalue of the training-mode mini-batch loss (beyond the paper).

PROTOCOL.md section 4 notes that BN's effective beta sits at 1 / (smallest step), so
it may be set by the grid rather than by curvature; this measures curvature directly:
power iteration on Hessian-vector products (double backprop), from a fixed seeded start.
Records the eigenvalue of largest magnitude (|lambda| is the local beta-smoothness, the
quantity effective beta estimates; it can be negative, as for BN networks at
initialization), the iterations and the final residual ||Hv - lambda v|| / |lambda|.
"""

import numpy as np
import tensorflow as tf

from pipeline.probes.stateless import dot, global_norm, to_python


class CurvatureProbe:
    name = "curvature"

    def __init__(self, probe_config, config, objective, batches):
        self.every = probe_config.every
        self.iterations = probe_config.iterations
        self.objective, self.batches = objective, batches
        rng = np.random.default_rng(config.seed)
        self.start = [tf.constant(rng.normal(size=v.shape), v.dtype)
                      for v in objective.model.trainable_variables]
        self._measure = tf.function(self._measure_graph)

    def _hessian_vector_product(self, trainable, non_trainable, x, y, vector):
        with tf.GradientTape() as outer:
            outer.watch(trainable)
            _, grads = self.objective.loss_and_grads(trainable, non_trainable, x, y)
            directional = dot(grads, vector)
        return outer.gradient(directional, trainable)

    def _measure_graph(self, x, y, trainable, non_trainable):
        norm = global_norm(self.start)
        vector = [v / norm for v in self.start]

        def body(i, vector, eigenvalue, residual):
            product = self._hessian_vector_product(trainable, non_trainable, x, y, vector)
            eigenvalue = dot(vector, product)  # Rayleigh quotient, |vector| = 1
            residual = global_norm([p - eigenvalue * v for p, v in zip(product, vector)]) / tf.abs(
                eigenvalue)
            length = global_norm(product)
            return i + 1, [p / length for p in product], eigenvalue, residual

        _, _, eigenvalue, residual = tf.while_loop(
            lambda i, *_: i < self.iterations, body,
            (tf.constant(0), vector, tf.constant(0.0), tf.constant(np.inf, tf.float32)))
        return eigenvalue, residual

    def __call__(self, step):
        x, y = self.batches(step)
        eigenvalue, residual = self._measure(x, y, *self.objective.values())
        return to_python({"curvature/top_eigenvalue": eigenvalue.numpy(),
                          "curvature/residual": residual.numpy(),
                          "curvature/iterations": float(self.iterations)})
