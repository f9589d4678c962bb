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

import math

import keras
import tensorflow as tf
from keras import ops

# Paper constants of Algorithm 1: mu_j ~ U(-n_mu, n_mu), sigma_j ~ U(1, n_sigma);
# per element m ~ U(mu_j - r_mu, mu_j + r_mu), s ~ N(sigma_j, r_sigma).
PAPER_NOISE = dict(n_mu=0.5, n_sigma=1.25, r_mu=0.1, r_sigma=0.1)
# BN hyperparameters of PROTOCOL.md section 1 (Keras convention: 0.9 = PyTorch's 0.1).
PAPER_MOMENTUM = 0.9
PAPER_EPSILON = 1e-5
# tf.random.Algorithm.AUTO_SELECT as the raw stateless kernels take it.
AUTO_SELECT_ALGORITHM = 3


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


def _replica_id():
    """This replica's index in its sync group (0 outside a distribution strategy)."""
    context = tf.distribute.get_replica_context()
    return 0 if context is None else context.replica_id_in_sync_group


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
    same distribution.
    """
    rank = len(shape)
    axis = axis % rank
    # Broadcast shape of a per-unit quantity: 1 everywhere but the unit axis.
    unit_shape = [1] * rank
    unit_shape[axis] = shape[axis]
    if keras.backend.backend() == "tensorflow":
        return _tensorflow_noise(shape, unit_shape, seed_generator, n_mu, n_sigma, r_mu, r_sigma,
                                 dtype)
    import jax  # the seeds are JAX keys; the draws themselves are keras.random's
    base = seed_generator.next()
    unit_mu, unit_sigma, element_shift, element_scale = (
        jax.random.fold_in(base, k) for k in range(4))
    mu = keras.random.uniform(unit_shape, -n_mu, n_mu, dtype=dtype, seed=unit_mu)
    sigma = keras.random.uniform(unit_shape, 1.0, n_sigma, dtype=dtype, seed=unit_sigma)
    uniform = keras.random.uniform(shape, dtype=dtype, seed=element_shift)
    normal = keras.random.normal(shape, dtype=dtype, seed=element_scale)
    return normal * r_sigma + sigma, uniform * (2.0 * r_mu) + (mu - r_mu)


def _tensorflow_noise(shape, unit_shape, seed_generator, n_mu, n_sigma, r_mu, r_sigma, dtype):
    """`sample_shift_noise` with TensorFlow's stateless kernels, which take tensor seeds.

    Cost: the per-element draws are the whole price of the noise. Philox makes one
    32-bit word per float, ~2.7 ms per million on a 2-core CPU, and each element needs
    two (one for its shift, one for its scale), so the words alone take ~0.55 of a
    VGG11/4-BN training step at batch 128. The shift is the raw U[0, 1) kernel (one pass)
    and the scale `box_muller_normal`; both affine maps fold into per-unit constants.
    """
    base = tf.cast(seed_generator.next(), tf.int64)
    unit_seeds = tf.random.experimental.stateless_split(base, 2)
    element_seeds = tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(base, _replica_id() + 1), 2)
    mu = tf.random.stateless_uniform(unit_shape, unit_seeds[0], -n_mu, n_mu, dtype=dtype)
    sigma = tf.random.stateless_uniform(unit_shape, unit_seeds[1], 1.0, n_sigma, dtype=dtype)
    shape = tf.convert_to_tensor(shape, tf.int32)
    uniform = philox_uniform(shape, element_seeds[0], dtype)
    normal = box_muller_normal(shape, element_seeds[1], dtype)
    shift = uniform * (2.0 * r_mu) + (mu - r_mu)
    scale = normal * r_sigma + sigma
    return scale, shift


def philox_uniform(shape, seed, dtype):
    """U[0, 1) with the device's algorithm, as `tf.random.stateless_uniform` picks it
    ("auto_select": Philox on CPU and GPU), in one pass: the public op adds two more for
    its (minval, maxval) map."""
    key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(seed=seed)
    return tf.raw_ops.StatelessRandomUniformV2(shape=shape, key=key, counter=counter,
                                               alg=AUTO_SELECT_ALGORITHM, dtype=dtype)


def box_muller_normal(shape, seed, dtype):
    """N(0, 1) draws of `shape`: the Box-Muller transform of U[0, 1) pairs (u1, u2),
    z = sqrt(-2 ln(1 - u1)) (cos 2 pi u2, sin 2 pi u2), one independent pair of normals
    per pair of uniforms.

    The transform TensorFlow's normal kernel applies too, from the same Philox words at
    the same 2^-23 resolution, but there with scalar log, sin and cos per pair; as
    vectorized ops it makes VGG11/4's 4.8M draws per step ~12 ms cheaper on a 2-core CPU
    (a quarter of the noise's cost). `1 - u1` lies in (0, 1], so the logarithm is finite
    and |z| <= 5.65.
    """
    size = tf.reduce_prod(shape)
    half = (size + 1) // 2  # an odd size drops the last draw
    u1, u2 = tf.unstack(philox_uniform(tf.stack([2, half]), seed, dtype))
    radius = tf.sqrt(-2.0 * tf.math.log1p(-u1))
    angle = (2.0 * math.pi) * u2
    normal = tf.concat([radius * tf.cos(angle), radius * tf.sin(angle)], axis=0)
    return tf.reshape(normal[:size], shape)


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
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras' BatchNormalization, with TensorFlow's fused kernel for conv inputs in
    training and batch moments that are exact to second order.

    Keras 3 normalizes with separate moments and arithmetic ops; on a 2-core CPU the
    fused `FusedBatchNormV3` kernel makes a VGG11/4-BN training step ~20 % faster
    (68 -> 55 ms at batch 128). Outputs, gradients and moving statistics equal Keras'
    within float32 rounding (tested). Everything else (inference, 2-D inputs, where the
    fused kernel is slower, synchronized statistics, mixed precision, other backends)
    is Keras' own code path, but for the moments (see `_moments`).
    """

    def __init__(self, momentum=PAPER_MOMENTUM, epsilon=PAPER_EPSILON, **kwargs):
        super().__init__(momentum=momentum, epsilon=epsilon, **kwargs)

    def _fusable(self, inputs, mask):
        return (keras.backend.backend() == "tensorflow" and mask is None
                and len(inputs.shape) == 4 and self.axis in (-1, 3) and inputs.dtype == "float32"
                and self.center and self.scale and not (self.synchronized or self.renorm))

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
        if not (training and self.trainable and self._fusable(inputs, mask)):
            return super().call(inputs, training=training, mask=mask)
        # The raw op, not tf.compat.v1.nn.fused_batch_norm, which raises epsilon to 1.001e-5.
        outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=self.gamma, offset=self.beta, mean=tf.constant([], tf.float32),
            variance=tf.constant([], tf.float32), epsilon=self.epsilon, is_training=True)
        # The kernel returns the unbiased (n - 1) batch variance; Keras' moving average,
        # like its normalization, uses the biased one. n = batch x height x width.
        count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], tf.float32)
        variance = variance * ((count - 1.0) / count)
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
        return outputs


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

    def __init__(self, n_mu=0.5, n_sigma=1.25, r_mu=0.1, r_sigma=0.1,
                 apply_noise=True, noise_at_inference=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self._init_noise(n_mu, n_sigma, r_mu, r_sigma, noise_at_inference, seed, apply_noise)

    def call(self, inputs, training=None, mask=None):
        outputs = super().call(inputs, training=training, mask=mask)
        return self._add_noise(outputs, self.axis, training)

    def get_config(self):
        return {**super().get_config(), **self._noise_config(), "apply_noise": self.apply_noise}


@keras.saving.register_keras_serializable(package="pipeline")
class CovariateShiftNoise(ShiftNoise, keras.layers.Layer):
    """Algorithm-1 noise alone (no normalization), in training mode (and at inference
    with `noise_at_inference`)."""

    def __init__(self, n_mu=0.5, n_sigma=1.25, r_mu=0.1, r_sigma=0.1, axis=-1,
                 noise_at_inference=False, seed=None, **kwargs):
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
class LpNormalization(keras.layers.Layer):
    """l_p normalization of Section 3.3: y_hat = (y - mean(y)) / N_p(y), then gamma, beta.

    Per unit over the batch (and positions): N_1 = mean|y|, N_2 = sqrt(mean y^2),
    N_inf = max|y|, all on the *uncentered* y (PROTOCOL.md section 5). `epsilon` is
    added to N_p (inside the square root for p=2) so a dead unit does not divide by 0.
    Inference uses moving averages of mean and N_p, updated like BatchNorm's.
    """

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


# name -> builder(channels, seed, synchronized, noise, name). `None` for "none".
NORM_LAYERS = {
    "none": None,
    "batch": lambda c, seed, sync, noise, name: BatchNormalization(synchronized=sync, name=name),
    "noisy_batch": lambda c, seed, sync, noise, name: NoisyBatchNormalization(
        seed=seed, synchronized=sync, name=name, **noise),
    "noise_only": lambda c, seed, sync, noise, name: CovariateShiftNoise(
        seed=seed, name=name, **noise),
    "l1": lambda c, seed, sync, noise, name: LpNormalization(p=1, name=name),
    "l2": lambda c, seed, sync, noise, name: LpNormalization(p=2, name=name),
    "linf": lambda c, seed, sync, noise, name: LpNormalization(p="inf", name=name),
    "layer": lambda c, seed, sync, noise, name: keras.layers.LayerNormalization(
        epsilon=PAPER_EPSILON, name=name),
    "group": lambda c, seed, sync, noise, name: _group(c, name=name),
}


def make_norm_layer(norm, channels, name, seed=None, synchronized=False, noise=None):
    """Build the normalization layer called `norm` for `channels` units, or None.

    Args:
        norm: a key of `NORM_LAYERS`.
        channels: units of the normalized axis (last axis).
        name: the layer's name (stable names let probes find it).
        seed: noise seed for `noisy_batch` / `noise_only`.
        synchronized: BatchNorm statistics all-reduced across replicas.
        noise: Algorithm-1 settings (dict with n_mu, n_sigma, r_mu, r_sigma and
            optionally noise_at_inference); the paper's when None.
    """
    if norm not in NORM_LAYERS:
        raise ValueError(
            f"Unknown norm {norm!r}. Valid norms: {', '.join(sorted(NORM_LAYERS))}.")
    builder = NORM_LAYERS[norm]
    if builder is None:
        return None
    # On JAX a step is one program over the global batch, so BN statistics are the global
    # batch's already: what synchronization asks for (Keras refuses the flag there).
    synchronized = synchronized and keras.backend.backend() == "tensorflow"
    return builder(channels, seed, synchronized, dict(PAPER_NOISE, **(noise or {})), name)
