"""VGG and DLN factories: every variant builds, runs forward and backward, pinned sizes."""

import numpy as np
import pytest
import tensorflow as tf

from pipeline.nets.layers import NORM_LAYERS
from pipeline.nets.models import VGG_SPECS, build_dln, build_vgg, weight_layers

# Trainable / non-trainable weights each norm adds per normalized unit.
NORM_WEIGHTS = {"none": (0, 0), "batch": (2, 2), "noisy_batch": (2, 2), "l1": (2, 2),
                "l2": (2, 2), "linf": (2, 2), "layer": (2, 0), "group": (2, 0),
                "noise_only": (0, 0)}


# VGG11 at width 1/8, by hand: convs 3->8->16->32->32->64->64->64->64 (3x3, with bias:
# 224 + 1,168 + 4,640 + 9,248 + 18,496 + 3 x 36,928 = 144,560), then the 1x1x64 -> 10
# linear head (650): 145,210 weights without a norm; 8+16+32+32+4x64 = 344 normalized
# units. Full size, normalized units per depth: the channels of its convs, summed.
VGG11_EIGHTH = (145_210, 344)
UNITS = {11: 2_752, 13: 2_944, 16: 4_224, 19: 5_504}


def _with_norm(base, units, norm):
    per_unit = NORM_WEIGHTS[norm]
    return base + per_unit[0] * units, per_unit[1] * units


def _counts(model):
    # Seed-generator states are int variables, not weights of the network.
    frozen = [w for w in model.non_trainable_weights if "seed_generator" not in w.path]
    return (sum(int(np.prod(w.shape)) for w in model.trainable_weights),
            sum(int(np.prod(w.shape)) for w in frozen))


# Full-size counts pinned against published sizes: VGG16's convs are Keras
# Applications' VGG16(include_top=False), 14,714,688 parameters; with BN and the
# 512 -> 10 head it is pytorch-cifar's VGG16, 14,728,266.
@pytest.mark.parametrize("depth, norm, trainable", [
    (16, "none", 14_714_688 + 5_130), (16, "batch", 14_728_266), (11, "batch", 9_231_114),
    (19, "noisy_batch", 20_040_522), (13, "l1", 9_416_010)])
def test_full_size_parameter_counts_are_pinned(depth, norm, trainable):
    model = build_vgg(depth, norm=norm)
    assert _counts(model) == (trainable, NORM_WEIGHTS[norm][1] * UNITS[depth])


def _forward_backward(model, x, y_dim):
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = tf.reduce_mean(tf.square(out))
    grads = tape.gradient(loss, model.trainable_variables)
    assert out.shape == (x.shape[0], y_dim)
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)
    assert any(np.abs(g.numpy()).sum() > 0 for g in grads)


@pytest.mark.parametrize("norm", sorted(NORM_LAYERS))
def test_every_vgg_norm_variant_trains_forward_and_backward(norm, rng):
    model = build_vgg(11, norm=norm, width_multiplier=0.125)
    assert _counts(model) == _with_norm(*VGG11_EIGHTH, norm)
    _forward_backward(model, rng.normal(size=(4, 32, 32, 3)).astype("float32"), 10)


@pytest.mark.parametrize("depth", sorted(VGG_SPECS))
def test_every_vgg_depth_builds_with_stable_names(depth, rng):
    model = build_vgg(depth, norm="batch", width_multiplier=0.0625, num_classes=7, head="mlp",
                      hidden_units=16)
    convs = sum(1 for item in VGG_SPECS[depth] if item != "M")
    layers = weight_layers(model)
    assert len(layers) == convs + 3  # + the MLP head's three dense layers
    assert layers[0].name == "block1_conv1" and layers[-1].name == "head_dense3"
    # Each conv is followed by its norm and ReLU, by name (get_layer raises if absent).
    names = [layer.name for layer in model.layers]
    position = names.index("block1_conv1")
    assert names[position + 1:position + 3] == ["block1_norm1", "block1_relu1"]
    _forward_backward(model, rng.normal(size=(2, 32, 32, 3)).astype("float32"), 7)


def test_vgg16_layer_numbering_matches_protocol():
    names = [layer.name for layer in weight_layers(build_vgg(16, width_multiplier=0.0625))]
    # PROTOCOL.md: VGG layers #3, #5, #10, #11 are the 3rd, 5th, ... conv in forward order.
    assert names[2] == "block2_conv1" and names[4] == "block3_conv1"
    assert names[9] == "block4_conv3" and names[10] == "block5_conv1"
    assert names[-1] == "head_dense" and len(names) == 14


@pytest.mark.parametrize("norm", sorted(NORM_LAYERS))
def test_every_dln_variant_is_linear_without_norm_and_builds(norm, rng):
    model = build_dln(25, 10, norm=norm)
    trainable, frozen = _counts(model)
    per_unit = NORM_WEIGHTS[norm]
    assert trainable == 25 * 100 + 24 * 10 * per_unit[0]
    assert frozen == 24 * 10 * per_unit[1]
    _forward_backward(model, rng.normal(size=(16, 10)).astype("float32"), 10)


def test_plain_dln_computes_the_product_of_its_matrices(rng):
    model = build_dln(5, 4, norm="none")
    x = rng.normal(size=(3, 4)).astype("float32")
    product = np.eye(4)
    for layer in weight_layers(model):
        product = product @ layer.kernel.numpy()
    np.testing.assert_allclose(model(x).numpy(), x @ product, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(depth=12), "Valid depths: \\[11, 13, 16, 19\\]"), (dict(head="conv"), "Valid heads"),
    (dict(norm="bn"), "Valid norms"), (dict(width_multiplier=0), "positive")])
def test_bad_vgg_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_vgg(**kwargs)


def _batch_major_dln(depth, norm, seed):
    """The DLN as it was built before its activations went feature-major: Keras' Dense
    and the norm layers on the last axis, batch-major throughout (the reference)."""
    import keras
    from pipeline.nets.layers import make_norm_layer
    from pipeline.nets.models import layer_seed
    inputs = keras.Input((10,))
    x = inputs
    for i in range(1, depth + 1):
        x = keras.layers.Dense(10, use_bias=False, kernel_initializer="glorot_uniform",
                               name=f"dense{i}")(x)
        layer = make_norm_layer(norm, 10, f"norm{i}", seed=layer_seed(seed, i)) if i < depth else None
        x = layer(x) if layer is not None else x
    return keras.Model(inputs, x)


def _loss_and_gradients(model, x, y):
    """Summed l2 loss of a training-mode call and its gradients, on this backend."""
    import keras
    if keras.backend.backend() == "jax":
        import jax
        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]

        def loss(weights):
            out, _ = model.stateless_call(weights, frozen, x, training=True)
            return ((out - y) ** 2).sum()
        value, grads = jax.value_and_grad(loss)(trainable)
        return float(value), [np.asarray(g) for g in grads]
    with tf.GradientTape() as tape:
        value = tf.reduce_sum((model(x, training=True) - y) ** 2)
    return float(value), [g.numpy() for g in tape.gradient(value, model.trainable_variables)]


@pytest.mark.both_backends
@pytest.mark.parametrize("norm", ["none", "batch", "l1", "l2", "linf", "layer", "group"])
def test_feature_major_dln_computes_what_the_batch_major_one_does(norm, rng):
    # Same seed, same kernels (the layout changes no draw); then the same outputs, in
    # training and inference mode, the same loss, gradients and moving statistics.
    import keras
    keras.utils.set_random_seed(4)
    model = build_dln(4, 10, norm=norm, seed=4)
    keras.utils.set_random_seed(4)
    reference = _batch_major_dln(4, norm, seed=4)
    for ours, theirs in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    x = rng.normal(size=(64, 10)).astype("float32")
    y = rng.normal(size=(64, 10)).astype("float32")
    assert tuple(model(x).shape) == (64, 10)
    for training in (False, True):
        np.testing.assert_allclose(np.asarray(model(x, training=training)),
                                   np.asarray(reference(x, training=training)),
                                   rtol=1e-4, atol=1e-5)
    loss, grads = _loss_and_gradients(model, x, y)
    ref_loss, ref_grads = _loss_and_gradients(reference, x, y)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    assert len(grads) == len(ref_grads)
    # Absolute tolerance on the gradients' scale: some are zero up to rounding (a BN
    # layer's beta, whose shift the next BN removes).
    scale = max(np.abs(g).max() for g in ref_grads)
    for ours, theirs in zip(grads, ref_grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-5 * scale)
    for ours, theirs in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)  # moving statistics


def test_feature_major_dln_keeps_its_activations_feature_major():
    # The point of the layout: every layer between the two transposes is (units, batch).
    model = build_dln(3, 10, norm="batch")
    inner = [layer for layer in model.layers
             if layer.name.startswith(("dense", "norm"))]
    assert inner and all(tuple(layer.output.shape) == (10, None) for layer in inner)
    assert tuple(model.output.shape) == (None, 10)
