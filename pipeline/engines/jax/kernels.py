"""JAX's versions of the layers' backend-specific parts (see the TensorFlow module)."""

import math

import jax
import keras

# A JAX step is one program over the global batch, so BatchNorm's statistics are the
# global batch's already: what synchronization asks for (Keras refuses the flag here).
SYNCHRONIZED_BATCH_NORM = False


def shift_noise(shape, unit_shape, seed_generator, n_mu, n_sigma, r_mu, r_sigma, dtype):
    """`pipeline.nets.layers.sample_shift_noise` on JAX: the seeds are JAX keys folded from one
    draw of the generator; the draws themselves are keras.random's. Every element of the
    global batch gets its own draw.

    Each draw is made flat and reshaped: the same numbers (JAX's counter-based draws
    number the elements in row-major order, so the draw of a shape is the flat draw
    reshaped), but XLA compiles a flat draw ~4x faster than one over a 4-D index space
    (~0.3 s against ~1.3 s of CPU), and each noise layer puts four in every program that
    runs the network (the step, the probes).
    """
    base = seed_generator.next()
    unit_mu, unit_sigma, element_shift, element_scale = (
        jax.random.fold_in(base, k) for k in range(4))

    def flat(draw, drawn_shape, seed, *bounds):
        return draw((math.prod(drawn_shape),), *bounds, dtype=dtype, seed=seed).reshape(
            drawn_shape)
    mu = flat(keras.random.uniform, unit_shape, unit_mu, -n_mu, n_mu)
    sigma = flat(keras.random.uniform, unit_shape, unit_sigma, 1.0, n_sigma)
    uniform = flat(keras.random.uniform, shape, element_shift)
    normal = flat(keras.random.normal, shape, element_scale)
    return normal * r_sigma + sigma, uniform * (2.0 * r_mu) + (mu - r_mu)


def fused_batch_norm(layer, inputs, mask):
    """None: XLA fuses Keras' own BatchNorm ops itself."""
    return None


def layout_barrier(x):
    """`x` behind an optimization barrier: XLA may not carry its memory layout across.

    The DLN's feature-major activations (pipeline.nets.feature_major) need it at the
    transposes into and out of them: otherwise XLA's layout assignment makes those
    transposes free by giving the activations the batch-major layout after all, and
    the products are as slow as before (measured: 1,190 us a step against 350)."""
    return jax.lax.optimization_barrier(x)
