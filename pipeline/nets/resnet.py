"""The CIFAR ResNet of He et al. (2016, section 4.2), registered as the family "resnet":
a 3x3 conv, three stages of n basic blocks (16, 32, 64 channels; stride 2 at the first
block of stages 2 and 3), global average pooling and a dense layer: 6n + 2 weight layers
(`model.depth` 20, 32, 44, 56, 110). A basic block is conv -> norm -> ReLU -> conv -> norm,
plus the shortcut, then ReLU; the shortcuts are identities ("option A": where the shape
changes, the input subsampled and padded with zero channels), so every weight layer is a
conv or the head. `model.width_multiplier` scales the channels.

Written only through the registry (pipeline.nets.families), as a user's family would be.
"""

import keras
from keras import ops

from pipeline.nets.families import register_family
from pipeline.nets.layers import make_norm_layer

STAGE_CHANNELS = (16, 32, 64)


@keras.saving.register_keras_serializable(package="pipeline")
class ZeroPadShortcut(keras.layers.Layer):
    """He et al.'s option-A shortcut: every `stride`-th pixel, `extra` zero channels."""

    def __init__(self, stride, extra, **kwargs):
        super().__init__(**kwargs)
        self.stride, self.extra = stride, extra

    def call(self, inputs):
        x = inputs[:, ::self.stride, ::self.stride, :]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, self.extra]])

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        def shrink(size):
            return None if size is None else -(-size // self.stride)
        return (batch, shrink(height), shrink(width), channels + self.extra)

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "extra": self.extra}


def _conv_norm(x, channels, stride, norm, name, relu=True):
    x = keras.layers.Conv2D(channels, 3, strides=stride, padding="same",
                            kernel_initializer="he_normal", name=f"{name}_conv")(x)
    layer = make_norm_layer(norm, channels, f"{name}_norm")
    x = layer(x) if layer is not None else x
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


@register_family("resnet")
def resnet(config, input_shape, num_outputs, norm):
    """ResNet-`config.model.depth` (6n + 2) for images of `input_shape`, `num_outputs` logits."""
    blocks = (config.model.depth - 2) // 6
    widths = [max(1, int(round(c * config.model.width_multiplier))) for c in STAGE_CHANNELS]
    inputs = keras.Input(input_shape, name="image")
    x = _conv_norm(inputs, widths[0], 1, norm, "stem")
    for stage, channels in enumerate(widths, 1):
        for block in range(1, blocks + 1):
            stride = 2 if stage > 1 and block == 1 else 1
            name = f"stage{stage}_block{block}"
            shortcut = x
            if stride != 1 or x.shape[-1] != channels:
                shortcut = ZeroPadShortcut(stride, channels - x.shape[-1],
                                           name=f"{name}_shortcut")(x)
            y = _conv_norm(x, channels, stride, norm, f"{name}_1")
            y = _conv_norm(y, channels, 1, norm, f"{name}_2", relu=False)
            x = keras.layers.ReLU(name=f"{name}_relu")(keras.layers.Add(name=f"{name}_add")(
                [y, shortcut]))
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    outputs = keras.layers.Dense(num_outputs, name="head_dense")(x)
    return keras.Model(inputs, outputs, name=f"resnet{config.model.depth}_{norm}")
