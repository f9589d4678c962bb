"""Top Hessian eigenvalue of the training-mode mini-batch loss (beyond the paper).

PROTOCOL.md section 4 notes that BN's effective beta sits at 1 / (smallest step), so
it may be set by the grid rather than by curvature; this measures curvature directly:
the Lanczos iteration on Hessian-vector products, from a fixed seeded start, until the
Ritz value of largest magnitude changes by less than `tolerance` of itself in one
iteration (or after `iterations`, or once the Krylov space holds an exact eigenvector).

Lanczos rather than power iteration: from the same k products it estimates both ends
of the spectrum at once and converges much faster (the power iteration needed 7-13
products on the demo's VGG at a tolerance of 1e-3, and stalls where the most negative
eigenvalue is about as large as the most positive one), so a call costs fewer products.
It keeps two vectors (the three-term recurrence, no reorthogonalization): over the few
iterations a call takes, a lost orthogonality only repeats the converged extreme Ritz
value, which leaves the estimate of the top one as it is. The start is the same at
every call, not the previous call's eigenvector: a warm start would make a resumed
run's records differ from an uninterrupted one's, and would not save products on a
mini-batch Hessian (on the demo's VGG, the top eigenvector of one step's batch has a
Rayleigh quotient of 0.1-0.3 under the Hessian of a batch 50-300 steps later, whose top
eigenvalue is 24-84).

Records the eigenvalue of largest magnitude (|lambda| is the local beta-smoothness, the
quantity effective beta estimates; it can be negative, as for BN networks at
initialization), the products used, the Lanczos residual ||Hy - lambda y|| / |lambda|
of its Ritz vector y (|beta_k s_k| / |lambda|, without forming y) and the step's
training loss (for comparisons at matched progress).
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

    def _measure_graph(self, x, y, start, trainable, non_trainable):
        # `start` is an argument, not a constant of the program: as a constant it made
        # the program differ with the seed, so every run compiled it again (~3.5 s on a
        # CPU for the DLN) instead of finding it in the compilation cache.
        size = self.iterations  # the tridiagonal matrix T is size x size, zero-padded
        positions = ops.arange(size, dtype="int32")
        norm = global_norm(start)
        start = [v / norm for v in start]

        def top_ritz(alphas, betas, i):
            """The Ritz value of largest magnitude of T after iteration i (its first i + 1
            rows) and its residual |beta_i s_i| / |theta|; the zero padding adds only
            zero eigenvalues, never the largest in magnitude."""
            off = ops.where(positions < i, betas, 0.0)[:-1]
            tridiagonal = ops.diag(alphas) + ops.diag(off, 1) + ops.diag(off, -1)
            values, vectors = ops.eigh(tridiagonal)
            top = ops.argmax(ops.abs(values))
            theta = ops.take(values, top)
            last = ops.take(ops.take(vectors, i, axis=0), top)
            return theta, ops.abs(ops.take(betas, i) * last) / ops.abs(theta)

        # keras.ops.while_loop passes the loop variables positionally.
        def body(i, previous_vector, vector, alphas, betas, eigenvalue, before, residual):
            product = self.objective.hessian_vector_product(trainable, non_trainable, x, y,
                                                            vector)
            alpha = dot(vector, product)
            # beta_{i-1}; at i = 0 the previous vector is zero, whatever it multiplies.
            beta_before = ops.take(betas, ops.maximum(i - 1, 0))
            product = [p - alpha * v - beta_before * u
                       for p, v, u in zip(product, vector, previous_vector)]
            beta = global_norm(product)
            alphas = ops.where(positions == i, alpha, alphas)
            betas = ops.where(positions == i, beta, betas)
            theta, residual = top_ritz(alphas, betas, i)
            # After an exact invariant subspace (beta 0) the loop stops: no division.
            following = [p / ops.maximum(beta, 1e-30) for p in product]
            return i + 1, vector, following, alphas, betas, theta, eigenvalue, residual

        def going(i, previous_vector, vector, alphas, betas, eigenvalue, before, residual):
            changed = ops.abs(eigenvalue - before) > self.tolerance * ops.abs(eigenvalue)
            exhausted = residual <= 1e-6  # an exact eigenvector (inf before the first product)
            room = ops.logical_and(i < self.iterations, ops.logical_not(exhausted))
            return ops.logical_and(room, ops.logical_or(i < 2, changed))

        inf = ops.full((), np.inf, "float32")
        zeros = ops.zeros((size,), "float32")
        used, _, _, _, _, eigenvalue, _, residual = ops.while_loop(
            going, body, (ops.zeros((), "int32"), [ops.zeros_like(v) for v in start], start,
                          zeros, zeros, ops.zeros((), "float32"), inf, inf))
        return eigenvalue, residual, used, self.objective.loss(trainable, non_trainable, x, y)

    def __call__(self, step):
        x, y = self.batches(step)
        eigenvalue, residual, used, loss = self._measure(x, y, self.start,
                                                         *self.objective.values())
        return to_python({"curvature/top_eigenvalue": eigenvalue,
                          "curvature/residual": residual, "curvature/loss": loss,
                          "curvature/iterations": float(np.asarray(used))})
