"""Contract and property tests of the normalization layers and their registry."""

import numpy as np
import keras
import pytest
import tensorflow as tf

from pipeline.nets.layers import (NORM_LAYERS, BatchNormalization, CovariateShiftNoise,
                             LpNormalization, NoisyBatchNormalization, make_norm_layer)

OFF = dict(apply_noise=False)


def _grads(layer, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * tf.cos(y))  # non-linear so gradients depend on y
    return y, tape.gradient(loss, [x] + layer.trainable_variables)


@pytest.mark.parametrize("shape", [(8, 5, 5, 6), (40, 6)])  # fused kernel (conv) and Keras' path
@pytest.mark.parametrize("noise_off", [OFF, dict(n_mu=0.0, n_sigma=1.0, r_mu=0.0, r_sigma=0.0)])
def test_noisy_bn_without_noise_equals_batchnorm_and_keras_batchnorm(noise_off, shape, rng):
    x = tf.constant(rng.normal(2.0, 3.0, shape), tf.float32)
    noisy = NoisyBatchNormalization(momentum=0.9, epsilon=1e-5, seed=1, **noise_off)
    ours = BatchNormalization(momentum=0.9, epsilon=1e-5)
    keras_bn = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    gamma = rng.normal(1.0, 0.2, shape[-1]).astype("float32")
    for layer in (noisy, ours, keras_bn):
        layer.build(x.shape)
        layer.gamma.assign(gamma)
    results = [(*_grads(layer, x), layer.moving_mean.numpy(), layer.moving_variance.numpy())
               for layer in (noisy, ours, keras_bn)]
    # Without noise, noisy BN is our BatchNormalization bit for bit ...
    (y_noisy, g_noisy, mean_noisy, var_noisy), (y_ours, g_ours, mean_ours, var_ours), \
        (y_keras, g_keras, mean_keras, var_keras) = results
    np.testing.assert_array_equal(y_noisy.numpy(), y_ours.numpy())
    for a, b in zip(g_noisy, g_ours):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(mean_noisy, mean_ours)
    np.testing.assert_array_equal(var_noisy, var_ours)
    # ... which is Keras' BatchNormalization up to float32 rounding (the fused kernel
    # sums in another order), including the biased variance in the moving average.
    np.testing.assert_allclose(y_ours.numpy(), y_keras.numpy(), rtol=1e-5, atol=1e-5)
    for a, b in zip(g_ours, g_keras):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mean_ours, mean_keras, rtol=1e-5)
    np.testing.assert_allclose(var_ours, var_keras, rtol=1e-5)
    reduced = x.numpy().reshape(-1, shape[-1]).astype(np.float64)
    np.testing.assert_allclose(var_ours, 0.9 + 0.1 * reduced.var(axis=0), rtol=1e-5)
    np.testing.assert_allclose(ours(x, training=False).numpy(), keras_bn(x, training=False).numpy(),
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(mean_ours, 0.0)  # the statistics did move


@pytest.mark.parametrize("shape", [(16, 3, 3, 4), (32, 5)])  # fused kernel, Keras' path
def test_second_derivatives_through_batchnorm_match_finite_differences(shape, rng):
    # The curvature probe differentiates twice. For f(x) = sum(sin(BN(x))) the product of
    # the Hessian with a unit direction v must equal (grad f(x + h v) - grad f(x - h v)) / 2h.
    # Keras' TensorFlow BN (tf.nn.moments) is ~5 % off here: it stops the gradient through
    # the mean inside the variance, harmless to first derivatives only.
    layer = BatchNormalization()
    x = tf.constant(rng.normal(1.0, 2.0, shape), tf.float32)
    v = rng.normal(size=shape)
    v = tf.constant(v / np.linalg.norm(v), tf.float32)

    def gradient(point):
        with tf.GradientTape() as tape:
            tape.watch(point)
            value = tf.reduce_sum(tf.sin(layer(point, training=True)))
        return tape.gradient(value, point)

    with tf.GradientTape() as outer:
        outer.watch(x)
        directional = tf.reduce_sum(gradient(x) * v)
    product = outer.gradient(directional, x).numpy().astype(np.float64)
    step = 1e-2
    difference = (gradient(x + step * v).numpy().astype(np.float64)
                  - gradient(x - step * v).numpy().astype(np.float64)) / (2 * step)
    assert np.linalg.norm(product - difference) / np.linalg.norm(difference) < 2e-3


def _noise_parts(shape, seed=3):
    """(scale, shift) of one draw, recovered from two identically seeded layers."""
    on_zeros = np.asarray(CovariateShiftNoise(seed=seed)(np.zeros(shape, "float32"), training=True))
    on_ones = np.asarray(CovariateShiftNoise(seed=seed)(np.ones(shape, "float32"), training=True))
    return on_ones - on_zeros, on_zeros


@pytest.mark.both_backends
def test_noise_follows_algorithm_1_per_channel():
    scale, shift = _noise_parts((64, 8, 8, 128))
    axes = (0, 1, 2)  # batch and positions count as batch for a conv channel
    mu, sigma = shift.mean(axis=axes), scale.mean(axis=axes)
    # Per-channel centres: mu_j ~ U(-0.5, 0.5), sigma_j ~ U(1, 1.25); each mean is over
    # 4096 elements, so its error is ~0.1 / 64.
    assert mu.min() >= -0.5 - 0.01 and mu.max() <= 0.5 + 0.01
    assert sigma.min() >= 1.0 - 0.01 and sigma.max() <= 1.25 + 0.01
    # ... and they really vary between channels like the uniform laws (var 1/12, 1/192).
    assert abs(mu.var() - 1 / 12) < 0.03 and abs(sigma.var() - 0.0625 / 12) < 0.002
    # Per element: shift ~ U(mu_j - 0.1, mu_j + 0.1), scale ~ N(sigma_j, 0.1).
    spread = shift - mu
    assert np.abs(spread).max() <= 0.1 + 0.01
    np.testing.assert_allclose(spread.var(axis=axes), 0.2 ** 2 / 12, rtol=0.1)
    np.testing.assert_allclose(scale.std(axis=axes), 0.1, rtol=0.1)


@pytest.mark.parametrize("shape", [(64, 8, 8, 32), (3, 5, 7)])  # an even and an odd size
def test_box_muller_normals_are_the_transform_of_the_philox_uniforms(shape):
    from scipy import stats

    from pipeline.engines.tensorflow.kernels import box_muller_normal, philox_uniform
    seed = tf.constant([3, 4], tf.int64)
    normal = box_muller_normal(tf.constant(shape), seed, tf.float32).numpy()
    # Independently: the same seed's uniforms, transformed in float64 by NumPy.
    size = int(np.prod(shape))
    u1, u2 = philox_uniform(tf.constant([2, (size + 1) // 2]), seed, tf.float32).numpy()
    radius = np.sqrt(-2.0 * np.log1p(-u1.astype("float64")))
    angle = 2.0 * np.pi * u2.astype("float64")
    expected = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:size]
    assert normal.shape == shape
    np.testing.assert_allclose(normal.ravel(), expected, rtol=1e-5, atol=1e-5)
    if size > 1000:  # the law: standard normal, and the two halves uncorrelated
        flat = normal.ravel()
        assert stats.kstest(flat, "norm").pvalue > 1e-3
        assert abs(np.corrcoef(flat[: size // 2], flat[size // 2:])[0, 1]) < 4 / np.sqrt(size / 2)


@pytest.mark.both_backends
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the JAX engine's noise kernel")
def test_jax_noise_drawn_flat_is_the_draw_of_its_shape_to_the_bit():
    # The kernel draws flat and reshapes (XLA compiles that faster): the numbers must be
    # those of the draws of the shape itself, which noisy-BN records on JAX were made
    # of, in the compiled programs that draw them. Activations of a conv (4-D), as the
    # VGG's; a draw of the shape takes XLA ~1 s to compile, so one shape and one seed.
    import jax
    from pipeline.engines.jax.kernels import shift_noise
    shape, unit_shape = (4, 3, 5, 6), [1, 1, 1, 6]
    n_mu, n_sigma, r_mu, r_sigma = 0.5, 1.25, 0.1, 0.1

    def flat():
        return shift_noise(shape, unit_shape, keras.random.SeedGenerator(7), n_mu, n_sigma,
                           r_mu, r_sigma, "float32")

    def of_the_shape():
        base = keras.random.SeedGenerator(7).next()
        mu_key, sigma_key, shift_key, scale_key = (jax.random.fold_in(base, k) for k in range(4))
        mu = jax.random.uniform(mu_key, unit_shape, "float32", -n_mu, n_mu)
        sigma = jax.random.uniform(sigma_key, unit_shape, "float32", 1.0, n_sigma)
        uniform = jax.random.uniform(shift_key, shape, "float32")
        normal = jax.random.normal(scale_key, shape, "float32") * 1.0 + 0.0  # as Keras' normal
        return normal * r_sigma + sigma, uniform * (2.0 * r_mu) + (mu - r_mu)
    for got, expected in zip(jax.jit(flat)(), jax.jit(of_the_shape)()):
        assert got.shape == shape and np.array_equal(np.asarray(got), np.asarray(expected))


@pytest.mark.both_backends
def test_noise_is_redrawn_each_step_seeded_and_absent_in_inference(rng):
    x = rng.normal(size=(16, 4, 4, 8)).astype("float32")
    layer = NoisyBatchNormalization(seed=7)
    first, second = np.asarray(layer(x, training=True)), np.asarray(layer(x, training=True))
    assert not np.allclose(first, second)
    twin = NoisyBatchNormalization(seed=7)
    np.testing.assert_array_equal(np.asarray(twin(x, training=True)), first)
    reference = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    reference.build(x.shape)
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        getattr(reference, name).assign(getattr(layer, name))
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), np.asarray(reference(x)))
    np.testing.assert_array_equal(np.asarray(CovariateShiftNoise(seed=1)(x, training=False)), x)


def _numpy_lp(y, p, eps=1e-5):
    axes = tuple(range(y.ndim - 1))
    mean = y.mean(axis=axes)
    if p == 1:
        norm = np.abs(y).mean(axis=axes) + eps
    elif p == 2:
        norm = np.sqrt((y ** 2).mean(axis=axes) + eps)
    else:
        norm = np.abs(y).max(axis=axes) + eps
    return mean, norm


@pytest.mark.parametrize("p", [1, 2, "inf"])
@pytest.mark.parametrize("shape", [(32, 6), (8, 5, 5, 4)])
def test_lp_normalization_matches_numpy(p, shape, rng):
    y = rng.normal(1.5, 2.0, shape)
    layer = LpNormalization(p=p, momentum=0.9)
    layer.build(shape)
    gamma, beta = rng.normal(size=shape[-1]), rng.normal(size=shape[-1])
    layer.gamma.assign(gamma.astype("float32"))
    layer.beta.assign(beta.astype("float32"))
    out = layer(tf.constant(y, tf.float32), training=True).numpy()
    mean, norm = _numpy_lp(y, p)
    np.testing.assert_allclose(out, (y - mean) / norm * gamma + beta, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(layer.moving_norm.numpy(), 0.9 + 0.1 * norm, rtol=1e-5)
    inference = layer(tf.constant(y, tf.float32), training=False).numpy()
    expected = (y - 0.1 * mean) / (0.9 + 0.1 * norm) * gamma + beta
    np.testing.assert_allclose(inference, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("norm", sorted(NORM_LAYERS))
def test_every_registered_norm_honours_the_layer_contract(norm, tmp_path, rng):
    layer = make_norm_layer(norm, channels=8, name=f"{norm}_under_test", seed=3)
    if layer is None:
        assert norm == "none"
        return
    inputs = keras.Input((4, 4, 8))
    model = keras.Model(inputs, layer(inputs))
    x = rng.normal(size=(6, 4, 4, 8)).astype("float32")
    assert model(x, training=True).shape == x.shape
    expected_weights = {"batch": 4, "noisy_batch": 4, "l1": 4, "l2": 4, "linf": 4,
                        "layer": 2, "group": 2, "noise_only": 0}[norm]
    assert len(layer.weights) == expected_weights
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), model(x, training=False).numpy())


def test_unknown_norm_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Valid norms: batch, group, l1"):
        make_norm_layer("bn", channels=4, name="x")


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_mu=-1.0), "non-negative"), (dict(n_sigma=0.5), "n_sigma"),
    (dict(r_sigma=-0.1), "non-negative")])
def test_noise_arguments_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NoisyBatchNormalization(**kwargs)
    with pytest.raises(ValueError, match=message):
        CovariateShiftNoise(**kwargs)


def test_lp_arguments_are_validated():
    with pytest.raises(ValueError, match="`p` must be 1, 2 or 'inf'"):
        LpNormalization(p=3)


def test_noise_at_inference_is_an_explicit_opt_in(rng):
    x = tf.constant(rng.normal(size=(16, 4, 4, 8)), tf.float32)
    layer = NoisyBatchNormalization(seed=2, noise_at_inference=True)
    plain = NoisyBatchNormalization(seed=2)
    first, second = layer(x, training=False), layer(x, training=False)
    assert not np.allclose(first, second)
    assert not np.allclose(first, plain(x, training=False))
    noise = CovariateShiftNoise(seed=2, noise_at_inference=True)
    assert not np.allclose(noise(x, training=False), x)
    assert NoisyBatchNormalization.from_config(layer.get_config()).noise_at_inference


def test_noise_streams_of_runs_and_layers_are_independent():
    # Run s's layer k+1 and run s+1's layer k: with seeds `run + layer` (the old rule)
    # they drew the same noise; hashed, every (run, layer) pair has a stream of its own.
    from pipeline.nets.models import layer_seed
    assert len({layer_seed(run, layer) for run in range(30) for layer in range(30)}) == 900
    # Zero input: BN's output is 0, so the layer's output is its additive draw m, one
    # mean mu_j per channel (the dominant part) and a spread per element; 1024 channels
    # put the correlation of independent streams within ~0.03 of 0.
    x = np.zeros((64, 1024), "float32")

    def draws(seed):
        return np.asarray(NoisyBatchNormalization(seed=seed)(x, training=True)).ravel()
    for run in (0, 5):
        a, b = draws(layer_seed(run, 1)), draws(layer_seed(run + 1, 0))
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.15
    np.testing.assert_array_equal(draws(0 + 1), draws(1 + 0))  # what addition gave
