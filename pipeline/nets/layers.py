"""Normalization layers of the paper and the name -> layer registry.

- `NoisyBatchNormalization`: BatchNorm followed by the covariate-shift noise of the
  paper's Algorithm 1 (Santurkar et al. 2018, Section 2.1).
- `CovariateShiftNoise`: the same noise with no normalization (the paper notes that a
  network without BN stops training under it).
- `LpNormalization`: the l_p normalizations of Section 3.3 (p in {1, 2, inf}).
- `make_norm_layer(name, ...)`: the registry used by the model factories.

All layers normalize over every axis but `axis` (batch, and height/width for conv
inputs), so a "unit" is a channel of a conv layer or a neuron of a dense layer.
"""

import contextlib
import contextvars
import math

import keras
import numpy as np
from keras import ops

from pipeline.core.config import NORMS, NoiseConfig
from pipeline.engines import kernels

# Paper constants of Algorithm 1 (their one home is the config's NoiseConfig):
# mu_j ~ U(-n_mu, n_mu), sigma_j ~ U(1, n_sigma); per element
# m ~ U(mu_j - r_mu, mu_j + r_mu), s ~ N(sigma_j, r_sigma).
PAPER_NOISE = {key: getattr(NoiseConfig, key) for key in ("n_mu", "n_sigma", "r_mu", "r_sigma")}
# BN hyperparameters of PROTOCOL.md section 1 (Keras convention: 0.9 = PyTorch's 0.1).
PAPER_MOMENTUM = 0.9
PAPER_EPSILON = 1e-5


def _check_noise_args(n_mu, n_sigma, r_mu, r_sigma):
    if n_mu < 0 or r_mu < 0 or r_sigma < 0:
        raise ValueError(
            "Noise ranges must be non-negative. Received: "
            f"n_mu={n_mu}, r_mu={r_mu}, r_sigma={r_sigma}"
        )
    if n_sigma < 1:
        raise ValueError(
            "`n_sigma` is the upper end of U(1, n_sigma) and must be >= 1. "
            f"Received: n_sigma={n_sigma}"
        )


def sample_shift_noise(shape, axis, seed_generator, n_mu, n_sigma, r_mu, r_sigma, dtype):
    """Draw one step's Algorithm-1 noise for a tensor of `shape`.

    Returns `(scale, shift)`, both of `shape`, to be applied as `scale * a + shift`.
    Per unit j (index along `axis`): mu_j ~ U(-n_mu, n_mu), sigma_j ~ U(1, n_sigma);
    per element: shift ~ U(mu_j - r_mu, mu_j + r_mu), scale ~ N(sigma_j, r_sigma).

    One draw of `seed_generator` per call, split into four independent seeds. The unit
    draws are the same on every replica (one distribution per step, as in the paper);
    the element draws differ between replicas: on TensorFlow each replica folds in its
    id, on JAX the step is one program over the global batch, so every element of the
    global batch gets its own draw. The two backends draw different numbers from the
    same distribution (the draws are the engines' kernels).
    """
    rank = len(shape)
    axis = axis % rank
    # Broadcast shape of a per-unit quantity: 1 everywhere but the unit axis.
    unit_shape = [1] * rank
    unit_shape[axis] = shape[axis]
    return kernels().shift_noise(shape, unit_shape, seed_generator, n_mu, n_sigma, r_mu,
                                 r_sigma, dtype)


class StatefulNorm:
    """Mixin of the norm layers with moving statistics: which variables they are, and a
    batch-statistics mode. PreciseBN (pipeline.training.evaluation) finds every such layer of a
    model through this interface, so a new stateful norm is one class plus its registry
    entry.

    Within `batch_statistics_mode()`, a training-mode call traced writes the batch's own
    statistics into the moving ones (momentum 0) and draws no noise; the settings are
    Python attributes read at trace time, restored on leaving.
    """
    statistic_names = ()  # attribute names of the moving-statistic variables

    def moving_statistics(self):
        return [getattr(self, name) for name in self.statistic_names]

    @contextlib.contextmanager
    def batch_statistics_mode(self):
        saved = self.momentum
        self.momentum = 0.0
        try:
            yield
        finally:
            self.momentum = saved


class ShiftNoise:
    """Mixin: the Algorithm-1 settings, their validation, seeding and config.
    `apply_noise=False` switches the noise off without changing the architecture."""

    def _init_noise(self, n_mu, n_sigma, r_mu, r_sigma, noise_at_inference, seed, apply_noise=True):
        _check_noise_args(n_mu, n_sigma, r_mu, r_sigma)
        self.n_mu, self.n_sigma = float(n_mu), float(n_sigma)
        self.r_mu, self.r_sigma = float(r_mu), float(r_sigma)
        self.noise_at_inference = bool(noise_at_inference)
        self.seed = seed
        # Named after the layer, so checkpoints find its state by path on either backend.
        self.seed_generator = keras.random.SeedGenerator(seed, name=f"{self.name}_noise_seed")
        self.apply_noise = bool(apply_noise)

    def _add_noise(self, x, axis, training):
        if not (self.apply_noise and (training or self.noise_at_inference)):
            return x
        scale, shift = sample_shift_noise(ops.shape(x), axis, self.seed_generator, self.n_mu,
                                          self.n_sigma, self.r_mu, self.r_sigma, x.dtype)
        return scale * x + shift

    def _noise_config(self):
        return {"n_mu": self.n_mu, "n_sigma": self.n_sigma, "r_mu": self.r_mu,
                "r_sigma": self.r_sigma, "noise_at_inference": self.noise_at_inference,
                "seed": self.seed}


@keras.saving.register_keras_serializable(package="pipeline")
class BatchNormalization(StatefulNorm, keras.layers.BatchNormalization):
    """Keras' BatchNormalization, with the engine's fused training kernel where it has
    one (TensorFlow's `FusedBatchNormV3` for conv inputs: Keras 3 normalizes with
    separate moments and arithmetic ops, which the fused kernel beats on a CPU) and
    batch moments that are exact to second order. Everything else (inference, what the
    fused kernel does not cover, other backends) is Keras' own code path, but for the
    moments (see `_moments`).
    """

    statistic_names = ("moving_mean", "moving_variance")

    def __init__(self, momentum=PAPER_MOMENTUM, epsilon=PAPER_EPSILON, **kwargs):
        super().__init__(momentum=momentum, epsilon=epsilon, **kwargs)

    def _moments(self, inputs, mask):
        if mask is not None or self.synchronized:
            return super()._moments(inputs, mask)
        # Not `ops.moments`: on TensorFlow that is tf.nn.moments, whose variance stops the
        # gradient through the mean. First derivatives stay exact (the centred sum is 0),
        # second derivatives do not: Hessian-vector products of a BN network came out
        # ~4 % off a finite difference of gradients (the curvature probe needs them).
        mean = ops.mean(inputs, axis=self._reduction_axes, keepdims=True)
        variance = ops.mean(ops.square(inputs - mean), axis=self._reduction_axes)
        return ops.squeeze(mean, self._reduction_axes), variance

    def call(self, inputs, training=None, mask=None):
        if training and self.trainable:
            fused = kernels().fused_batch_norm(self, inputs, mask)
            if fused is not None:
                return fused
        return super().call(inputs, training=training, mask=mask)


@keras.saving.register_keras_serializable(package="pipeline")
class NoisyBatchNormalization(ShiftNoise, BatchNormalization):
    """BatchNorm whose training-mode output gets fresh Algorithm-1 noise every call.

    The noise is applied to the output after gamma/beta (PROTOCOL.md section 2 [D]),
    when `apply_noise=True` and `training=True` (or always, with `noise_at_inference`:
    the moving statistics of later layers are averages over noisy steps, so a network
    evaluated without the noise sees activations it never saw in training).
    Without noise at inference, inference is plain BatchNorm.
    With `apply_noise=False` outputs, gradients and moving statistics equal
    `BatchNormalization`'s with the same arguments (and Keras' within float rounding).

    Args:
        n_mu, n_sigma, r_mu, r_sigma: noise constants (paper defaults).
        apply_noise: switch the noise off without changing the architecture.
        noise_at_inference: also draw the noise when `training=False`.
        seed: seed of the layer's noise stream (a `keras.random.SeedGenerator`).
        **kwargs: passed to `keras.layers.BatchNormalization`.
    """

    def __init__(self, n_mu=NoiseConfig.n_mu, n_sigma=NoiseConfig.n_sigma, r_mu=NoiseConfig.r_mu,
                 r_sigma=NoiseConfig.r_sigma, apply_noise=True, noise_at_inference=False,
                 seed=None, **kwargs):
        super().__init__(**kwargs)
        self._init_noise(n_mu, n_sigma, r_mu, r_sigma, noise_at_inference, seed, apply_noise)

    def call(self, inputs, training=None, mask=None):
        outputs = super().call(inputs, training=training, mask=mask)
        return self._add_noise(outputs, self.axis, training)

    @contextlib.contextmanager
    def batch_statistics_mode(self):
        saved = self.apply_noise
        self.apply_noise = False
        try:
            with super().batch_statistics_mode():
                yield
        finally:
            self.apply_noise = saved

    def get_config(self):
        return {**super().get_config(), **self._noise_config(), "apply_noise": self.apply_noise}


@keras.saving.register_keras_serializable(package="pipeline")
class CovariateShiftNoise(ShiftNoise, keras.layers.Layer):
    """Algorithm-1 noise alone (no normalization), in training mode (and at inference
    with `noise_at_inference`)."""

    def __init__(self, n_mu=NoiseConfig.n_mu, n_sigma=NoiseConfig.n_sigma, r_mu=NoiseConfig.r_mu,
                 r_sigma=NoiseConfig.r_sigma, axis=-1, noise_at_inference=False, seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        self._init_noise(n_mu, n_sigma, r_mu, r_sigma, noise_at_inference, seed)
        self.axis = int(axis)
        self.supports_masking = True

    def call(self, inputs, training=False):
        return self._add_noise(inputs, self.axis, training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), **self._noise_config(), "axis": self.axis}


@keras.saving.register_keras_serializable(package="pipeline")
class LpNormalization(StatefulNorm, keras.layers.Layer):
    """l_p normalization of Section 3.3: y_hat = (y - mean(y)) / N_p(y), then gamma, beta.

    Per unit over the batch (and positions): N_1 = mean|y|, N_2 = sqrt(mean y^2),
    N_inf = max|y|, all on the *uncentered* y (PROTOCOL.md section 5). `epsilon` is
    added to N_p (inside the square root for p=2) so a dead unit does not divide by 0.
    Inference uses moving averages of mean and N_p, updated like BatchNorm's.
    """
    statistic_names = ("moving_mean", "moving_norm")

    def __init__(self, p=2, axis=-1, momentum=PAPER_MOMENTUM, epsilon=PAPER_EPSILON,
                 **kwargs):
        super().__init__(**kwargs)
        if p not in (1, 2, "inf", math.inf):
            raise ValueError(f"`p` must be 1, 2 or 'inf'. Received: p={p}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"`momentum` must be in [0, 1]. Received: momentum={momentum}")
        if epsilon <= 0:
            raise ValueError(f"`epsilon` must be positive. Received: epsilon={epsilon}")
        self.p = "inf" if p in ("inf", math.inf) else int(p)
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.supports_masking = True

    def build(self, input_shape):
        units = input_shape[self.axis]
        self.gamma = self.add_weight(shape=(units,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(units,), initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(
            shape=(units,), initializer="zeros", trainable=False, name="moving_mean")
        self.moving_norm = self.add_weight(
            shape=(units,), initializer="ones", trainable=False, name="moving_norm")

    def _reduction_axes(self, rank):
        return [a for a in range(rank) if a != self.axis % rank]

    def lp_norm(self, inputs):
        """N_p of the uncentered inputs per unit, shape (units,)."""
        axes = self._reduction_axes(len(inputs.shape))
        if self.p == 1:
            return ops.mean(ops.abs(inputs), axis=axes) + self.epsilon
        if self.p == 2:
            return ops.sqrt(ops.mean(ops.square(inputs), axis=axes) + self.epsilon)
        return ops.max(ops.abs(inputs), axis=axes) + self.epsilon

    def call(self, inputs, training=False):
        # Like BatchNorm, compute in float32 even under a mixed-precision policy.
        x = ops.cast(inputs, "float32")
        rank = len(x.shape)
        if training and self.trainable:
            mean = ops.mean(x, axis=self._reduction_axes(rank))
            norm = self.lp_norm(x)
            m = self.momentum
            self.moving_mean.assign(m * self.moving_mean + (1.0 - m) * mean)
            self.moving_norm.assign(m * self.moving_norm + (1.0 - m) * norm)
        else:
            mean = ops.cast(self.moving_mean, "float32")
            norm = ops.cast(self.moving_norm, "float32")
        shape = [1] * rank
        shape[self.axis % rank] = -1
        y = (x - ops.reshape(mean, shape)) / ops.reshape(norm, shape)
        y = y * ops.reshape(ops.cast(self.gamma, "float32"), shape) + ops.reshape(
            ops.cast(self.beta, "float32"), shape)
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "p": self.p, "axis": self.axis,
                "momentum": self.momentum, "epsilon": self.epsilon}


def _group(channels, **kw):
    # GroupNorm needs a group count dividing the channels: 32 groups (Wu & He's
    # default) where possible, else the largest divisor of 32 that fits.
    return keras.layers.GroupNormalization(groups=math.gcd(32, channels),
                                           epsilon=PAPER_EPSILON, **kw)


# name -> builder(channels, seed, synchronized, noise, name=..., axis=...). `None` for
# "none". `axis` is the normalized (unit) axis.
NORM_LAYERS = {
    "none": None,
    "batch": lambda c, seed, sync, noise, **kw: BatchNormalization(synchronized=sync, **kw),
    "noisy_batch": lambda c, seed, sync, noise, **kw: NoisyBatchNormalization(
        seed=seed, synchronized=sync, **kw, **noise),
    "noise_only": lambda c, seed, sync, noise, **kw: CovariateShiftNoise(seed=seed, **kw, **noise),
    "l1": lambda c, seed, sync, noise, **kw: LpNormalization(p=1, **kw),
    "l2": lambda c, seed, sync, noise, **kw: LpNormalization(p=2, **kw),
    "linf": lambda c, seed, sync, noise, **kw: LpNormalization(p="inf", **kw),
    "layer": lambda c, seed, sync, noise, **kw: keras.layers.LayerNormalization(
        epsilon=PAPER_EPSILON, **kw),
    "group": lambda c, seed, sync, noise, **kw: _group(c, **kw),
}
# Norms whose Keras layer takes the batch on axis 0 whatever its `axis` (GroupNorm
# reshapes and reduces from axis 1 on): a factory feeds them batch-major tensors.
BATCH_AXIS_0_ONLY = ("group",)


if tuple(sorted(NORM_LAYERS)) != NORMS:
    raise ImportError("pipeline.core.config.NORMS must list the names of NORM_LAYERS, sorted")


def layer_seed(run_seed, layer_index):
    """The seed of noise layer `layer_index` in the run seeded `run_seed`: a hash of the
    pair (NumPy's SeedSequence), so that no two (run, layer) pairs share a stream. With
    `run_seed + layer_index`, run s+1's layer k drew run s's layer k+1 noise."""
    return int(np.random.SeedSequence([run_seed, layer_index]).generate_state(1)[0] >> 1)


# The run's norm settings while a family's factory builds its model (`norm_settings`):
# a factory calls make_norm_layer(norm, channels) and the layer gets the run's noise
# seeds, BN synchronization and noise constants without the factory passing them on.
_RUN_SETTINGS = contextvars.ContextVar("norm_settings", default=None)


@contextlib.contextmanager
def norm_settings(seed, synchronized=False, noise=None):
    """Within: `make_norm_layer` calls that leave out `seed`, `synchronized` or `noise`
    take the run's: its k-th such layer draws noise from `layer_seed(seed, k)`."""
    token = _RUN_SETTINGS.set({"seed": seed, "synchronized": synchronized, "noise": noise,
                               "count": 0})
    try:
        yield
    finally:
        _RUN_SETTINGS.reset(token)


def make_norm_layer(norm, channels, name=None, seed=None, synchronized=None, noise=None,
                    axis=-1):
    """Build the normalization layer called `norm` for `channels` units, or None (for
    "none": the factory then leaves the norm out).

    Args:
        norm: a key of `NORM_LAYERS` (a factory passes on the norm it is given).
        channels: units of the normalized axis.
        name: the layer's name (Keras makes one when None).
        seed: noise seed for `noisy_batch` / `noise_only`; the run's next layer seed
            inside `norm_settings` (a family's build), else 0.
        synchronized: BatchNorm statistics all-reduced across replicas (the run's
            model.sync_batch_norm inside `norm_settings`, else False).
        noise: Algorithm-1 settings (dict with n_mu, n_sigma, r_mu, r_sigma and
            optionally noise_at_inference); the run's inside `norm_settings`, else the
            paper's.
        axis: the normalized (unit) axis; the others (batch, height, width) are
            reduced over. Not 0 (the batch) for the norms of `BATCH_AXIS_0_ONLY`.
    """
    if norm not in NORM_LAYERS:
        raise ValueError(
            f"Unknown norm {norm!r}. Valid norms: {', '.join(sorted(NORM_LAYERS))}.")
    run = _RUN_SETTINGS.get()
    if run is not None and seed is None:
        seed = layer_seed(run["seed"], run["count"])
        run["count"] += 1
    seed = 0 if seed is None else seed
    synchronized = (run or {}).get("synchronized", False) if synchronized is None else synchronized
    noise = (run or {}).get("noise") if noise is None else noise
    builder = NORM_LAYERS[norm]
    if builder is None:
        return None
    # Where a step is one program over the global batch (JAX), BN statistics are the
    # global batch's already, and Keras refuses the flag.
    synchronized = synchronized and kernels().SYNCHRONIZED_BATCH_NORM
    if norm in BATCH_AXIS_0_ONLY and axis == 0:
        raise ValueError(f"Norm {norm!r} needs the batch on axis 0; received axis={axis}.")
    return builder(channels, seed, synchronized, dict(PAPER_NOISE, **(noise or {})),
                   name=name, axis=axis)
