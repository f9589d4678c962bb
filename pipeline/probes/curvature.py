"""Top Hessian eigenvalue of the training-mode mini-batch loss (beyond the paper).

PROTOCOL.md section 4 notes that BN's effective beta sits at 1 / (smallest step), so
it may be set by the grid rather than by curvature; this measures curvature directly:
power iteration on Hessian-vector products, from a fixed seeded start, until the
eigenvalue changes by less than `tolerance` of itself in one iteration (or after
`iterations`). The start is the same at every call, not the previous call's eigenvector:
a warm start would make a resumed run's records differ from an uninterrupted one's.
Records the eigenvalue of largest magnitude (|lambda| is the local beta-smoothness, the
quantity effective beta estimates; it can be negative, as for BN networks at
initialization), the iterations, the final residual ||Hv - lambda v|| / |lambda| and the
step's training loss (for comparisons at matched progress).
"""


import numpy as np
from keras import ops

from pipeline.core.probe_settings import CurvatureConfig
from pipeline.probes.schedule import Schedule
from pipeline.probes.stateless import dot, global_norm, to_python

NAME = "curvature"
Config = CurvatureConfig  # its settings, the config section probes.curvature


class Probe:
    name = NAME

    def __init__(self, probe_config, context):
        self.schedule = Schedule.of(probe_config, context.config.train.steps)
        self.iterations, self.tolerance = probe_config.iterations, probe_config.tolerance
        self.objective, self.batches = context.objective, context.batches
        rng = np.random.default_rng(context.config.seed)
        self.start = [rng.normal(size=v.shape).astype(v.dtype)
                      for v in context.model.trainable_variables]
        self._measure = context.engine.compile(self._measure_graph)

    def _measure_graph(self, x, y, trainable, non_trainable):
        norm = global_norm(self.start)
        vector = [ops.convert_to_tensor(v) / norm for v in self.start]

        # keras.ops.while_loop passes the loop variables positionally.
        def body(i, vector, eigenvalue, previous, residual):
            product = self.objective.hessian_vector_product(trainable, non_trainable, x, y,
                                                            vector)
            updated = dot(vector, product)  # Rayleigh quotient, |vector| = 1
            residual = global_norm([p - updated * v for p, v in zip(product, vector)]) / ops.abs(
                updated)
            length = global_norm(product)
            return i + 1, [p / length for p in product], updated, eigenvalue, residual

        def going(i, vector, eigenvalue, previous, residual):
            changed = ops.abs(eigenvalue - previous) > self.tolerance * ops.abs(eigenvalue)
            return ops.logical_and(i < self.iterations, ops.logical_or(i < 2, changed))

        inf = ops.full((), np.inf, "float32")
        used, _, eigenvalue, _, residual = ops.while_loop(
            going, body, (ops.zeros((), "int32"), vector, ops.zeros((), "float32"), inf, inf))
        return eigenvalue, residual, used, self.objective.loss(trainable, non_trainable, x, y)

    def __call__(self, step):
        x, y = self.batches(step)
        eigenvalue, residual, used, loss = self._measure(x, y, *self.objective.values())
        return to_python({"curvature/top_eigenvalue": eigenvalue,
                          "curvature/residual": residual, "curvature/loss": loss,
                          "curvature/iterations": float(np.asarray(used))})
