"""Model factories: VGG (conv -> norm -> ReLU) and the deep linear network (DLN), and
their entries in the family registry (pipeline.nets.families).

Layer names are stable (probes find layers by role, `weight_layers`, not by name):
VGG `block{b}_conv{i}`, `block{b}_norm{i}`, `block{b}_relu{i}`, `block{b}_pool`,
`head_flatten`, `head_dense` (or `head_dense1..3` for the MLP head);
DLN `dense{i}` and `norm{i}` (1-based; feature-major activations inside,
pipeline.nets.feature_major). `weight_layers(model)` lists the layers with a kernel in
forward order: "layer #i" of PROTOCOL.md is `weight_layers(model)[i - 1]`.
"""

import keras

from pipeline.core.config import HEADS, VGG_DEPTHS
from pipeline.nets.families import noise_settings, register_family
from pipeline.nets.feature_major import FeatureMajorDense, Transpose
from pipeline.nets.layers import (BATCH_AXIS_0_ONLY, CovariateShiftNoise, LpNormalization,
                                   StatefulNorm, layer_seed, make_norm_layer)

NORM_CLASSES = (StatefulNorm, CovariateShiftNoise, LpNormalization,
                keras.layers.BatchNormalization, keras.layers.LayerNormalization,
                keras.layers.GroupNormalization, keras.layers.UnitNormalization)
# Layers between a weight layer and its norm that only move the data.
DATA_MOVING = (Transpose, keras.layers.Reshape, keras.layers.Permute)

# Channel specs, "M" = 2x2 max-pool (Simonyan & Zisserman 2015, configs A, B, D, E).
VGG_SPECS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
         512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"],
}
if tuple(VGG_SPECS) != VGG_DEPTHS:
    raise ImportError("pipeline.core.config.VGG_DEPTHS must list the depths of VGG_SPECS")


def build_vgg(depth=16, norm="batch", width_multiplier=1.0, num_classes=10,
              input_shape=(32, 32, 3), head="linear", hidden_units=512, seed=0,
              sync_batch_norm=False, noise=None):
    """VGG-`depth` with `norm` between every conv and its ReLU; returns logits.

    Args:
        depth: 11, 13, 16 or 19 (number of weight layers of the original VGG).
        norm: a key of `pipeline.nets.layers.NORM_LAYERS` ("none" = the paper's standard VGG).
        width_multiplier: scales every conv's channel count (at least 1 channel).
        head: "linear" (flatten -> Dense(num_classes), PROTOCOL.md [D]) or "mlp"
            (two hidden Dense(hidden_units) layers with norm and ReLU, as in VGG).
        seed: the run's seed; noise layer k draws from `layer_seed(seed, k)`.
        sync_batch_norm, noise: passed to `make_norm_layer`.
    """
    if depth not in VGG_SPECS:
        raise ValueError(f"Unknown VGG depth {depth}. Valid depths: {sorted(VGG_SPECS)}.")
    if head not in HEADS:
        raise ValueError(f"Unknown head {head!r}. Valid heads: {', '.join(HEADS)}.")
    if width_multiplier <= 0:
        raise ValueError(f"`width_multiplier` must be positive. Received: {width_multiplier}")
    norm_count = 0

    def norm_relu(x, channels, prefix, index):
        nonlocal norm_count
        layer = make_norm_layer(norm, channels, f"{prefix}_norm{index}",
                                seed=layer_seed(seed, norm_count), synchronized=sync_batch_norm,
                                noise=noise)
        norm_count += 1
        if layer is not None:
            x = layer(x)
        return keras.layers.ReLU(name=f"{prefix}_relu{index}")(x)

    inputs = keras.Input(input_shape, name="image")
    x, block, conv = inputs, 1, 1
    for item in VGG_SPECS[depth]:
        if item == "M":
            x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
            block, conv = block + 1, 1
            continue
        channels = max(1, int(round(item * width_multiplier)))
        x = keras.layers.Conv2D(channels, 3, padding="same",
                                kernel_initializer="glorot_uniform",
                                name=f"block{block}_conv{conv}")(x)
        x = norm_relu(x, channels, f"block{block}", conv)
        conv += 1
    x = keras.layers.Flatten(name="head_flatten")(x)
    if head == "mlp":
        for i in (1, 2):
            x = keras.layers.Dense(hidden_units, name=f"head_dense{i}")(x)
            x = norm_relu(x, hidden_units, "head", i)
        name = "head_dense3"
    else:
        name = "head_dense"
    outputs = keras.layers.Dense(num_classes, kernel_initializer="glorot_uniform",
                                 name=name)(x)
    return keras.Model(inputs, outputs, name=f"vgg{depth}_{norm}")


def build_dln(depth=25, width=10, norm="none", seed=0, sync_batch_norm=False, noise=None):
    """Deep linear network: `depth` bias-free Dense(width) layers, no non-linearity.

    `norm` follows every layer but the last (PROTOCOL.md section 1 [D]). Inside, the
    activations are feature-major, (width, batch): XLA's CPU products are several times
    faster so (pipeline.nets.feature_major says why); inputs and outputs are
    batch-major, (batch, width), and the kernels are a batch-major Dense's.
    """
    if depth < 1 or width < 1:
        raise ValueError(f"`depth` and `width` must be >= 1. Received: {depth}, {width}")
    inputs = keras.Input((width,), name="x")
    x = Transpose(name="to_feature_major")(inputs)
    for i in range(1, depth + 1):
        x = FeatureMajorDense(width, use_bias=False, kernel_initializer="glorot_uniform",
                              name=f"dense{i}")(x)
        if i < depth:
            layer = make_norm_layer(norm, width, f"norm{i}", seed=layer_seed(seed, i),
                                    synchronized=sync_batch_norm, noise=noise,
                                    axis=-1 if norm in BATCH_AXIS_0_ONLY else 0)
            if layer is not None and norm in BATCH_AXIS_0_ONLY:
                x = Transpose(name=f"norm{i}_to_feature_major")(
                    layer(Transpose(name=f"norm{i}_to_batch_major")(x)))
            elif layer is not None:
                x = layer(x)
    outputs = Transpose(name="to_batch_major")(x)
    return keras.Model(inputs, outputs, name=f"dln{depth}_{norm}")


# PROTOCOL.md sections 3-4: the paper's layers, 1-based weight-layer numbers.
@register_family("vgg", layers={"ics": [5, 10], "distributions": [3, 11]})
def vgg(config, input_shape, num_outputs, norm):
    m = config.model
    return build_vgg(m.depth, norm=norm, width_multiplier=m.width_multiplier,
                     num_classes=num_outputs, input_shape=input_shape, head=m.head,
                     hidden_units=m.hidden_units, seed=config.seed,
                     sync_batch_norm=m.sync_batch_norm, noise=noise_settings(config))


@register_family("dln", layers={"ics": [9, 17], "distributions": [1, 11, 24]})
def dln(config, input_shape, num_outputs, norm):
    if input_shape != (num_outputs,):
        raise ValueError(f"the DLN maps R^d to R^d; the data gives inputs {input_shape} and "
                         f"{num_outputs} targets")
    return build_dln(config.model.depth, num_outputs, norm=norm, seed=config.seed,
                     sync_batch_norm=config.model.sync_batch_norm, noise=noise_settings(config))


def weight_layers(model):
    """The layers holding a kernel (a weight matrix: conv, dense, any user layer with a
    `kernel` variable), in forward order, inside nested models and layers too: "layer
    #i" = index i - 1. Found by role, so the probes work on any network."""
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        kernel = getattr(layer, "kernel", None)
        if isinstance(kernel, keras.Variable) and kernel.trainable:
            found.append(layer)
    return found


def is_norm_layer(layer):
    """A normalization layer: one `make_norm_layer` builds (BN, noisy BN, the noise,
    l_p) or Keras' own (layer, group, unit, batch)."""
    return isinstance(layer, NORM_CLASSES)


def norm_after(model, layer):
    """The norm layer that normalizes `layer`'s output, found by role in the model's
    graph: the first consumer of its output, through layers that only move the data
    (the DLN's transposes, a reshape) while each has one consumer; `layer` itself when
    no norm follows it (the standard network, the output layer)."""
    current, in_model = layer, {id(each) for each in model._flatten_layers()}
    for _ in range(4):  # a norm sits at most a transpose or two away
        consumers = [node.operation for node in getattr(current, "_outbound_nodes", [])
                     if id(node.operation) in in_model]
        if len(consumers) != 1:
            return layer
        current = consumers[0]
        if is_norm_layer(current):
            return current
        if not isinstance(current, DATA_MOVING):
            return layer
    return layer
