"""TensorFlow's versions of the layers' backend-specific parts: the Algorithm-1 noise
draws (stateless kernels that take tensor seeds) and BatchNorm's fused training kernel.
`pipeline.nets.layers` calls them through `pipeline.engines.kernels()`."""

import math

import tensorflow as tf

# tf.random.Algorithm.AUTO_SELECT as the raw stateless kernels take it.
AUTO_SELECT_ALGORITHM = 3
# BatchNorm's `synchronized` flag all-reduces the batch statistics across replicas.
SYNCHRONIZED_BATCH_NORM = True


def _replica_id():
    """This replica's index in its sync group (0 outside a distribution strategy)."""
    context = tf.distribute.get_replica_context()
    return 0 if context is None else context.replica_id_in_sync_group


def shift_noise(shape, unit_shape, seed_generator, n_mu, n_sigma, r_mu, r_sigma, dtype):
    """`pipeline.nets.layers.sample_shift_noise` with TensorFlow's stateless kernels.

    The per-element draws are the whole price of the noise: Philox makes one 32-bit word
    per float and each element needs two (its shift and its scale). The shift is the raw
    U[0, 1) kernel (one pass) and the scale `box_muller_normal`; both affine maps fold
    into per-unit constants. Each replica folds its id into the element seeds.
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
    vectorized ops it is cheaper. `1 - u1` lies in (0, 1], so the logarithm is finite
    and |z| <= 5.65.
    """
    size = tf.reduce_prod(shape)
    half = (size + 1) // 2  # an odd size drops the last draw
    u1, u2 = tf.unstack(philox_uniform(tf.stack([2, half]), seed, dtype))
    radius = tf.sqrt(-2.0 * tf.math.log1p(-u1))
    angle = (2.0 * math.pi) * u2
    normal = tf.concat([radius * tf.cos(angle), radius * tf.sin(angle)], axis=0)
    return tf.reshape(normal[:size], shape)


def _fusable(layer, inputs, mask):
    # 2-D inputs are slower through the fused kernel; the rest it does not cover.
    return (mask is None and len(inputs.shape) == 4 and layer.axis in (-1, 3)
            and inputs.dtype == "float32" and layer.center and layer.scale
            and not (layer.synchronized or layer.renorm))


def fused_batch_norm(layer, inputs, mask):
    """A Keras BatchNormalization `layer`'s training-mode output through TensorFlow's
    fused `FusedBatchNormV3` kernel (and its moving statistics updated), or None where
    the kernel does not apply. Outputs, gradients and moving statistics equal Keras'
    within float32 rounding (tested)."""
    if not _fusable(layer, inputs, mask):
        return None
    # The raw op, not tf.compat.v1.nn.fused_batch_norm, which raises epsilon to 1.001e-5.
    outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
        x=inputs, scale=layer.gamma, offset=layer.beta, mean=tf.constant([], tf.float32),
        variance=tf.constant([], tf.float32), epsilon=layer.epsilon, is_training=True)
    # The kernel returns the unbiased (n - 1) batch variance; Keras' moving average, like
    # its normalization, uses the biased one. n = batch x height x width.
    count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], tf.float32)
    variance = variance * ((count - 1.0) / count)
    m = layer.momentum
    layer.moving_mean.assign(layer.moving_mean * m + mean * (1.0 - m))
    layer.moving_variance.assign(layer.moving_variance * m + variance * (1.0 - m))
    return outputs


def layout_barrier(x):
    """`x` itself: TensorFlow's kernels keep the layout each op asks for (see JAX's)."""
    return x
