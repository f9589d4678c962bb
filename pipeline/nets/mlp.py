"""A multilayer perceptron, registered as the family "mlp": the inputs flattened, then
`model.depth` - 1 hidden layers of `model.hidden_units` units, each dense -> norm ->
ReLU, and a dense output layer: `model.depth` weight layers. For images (logits) and
for regression (targets) alike.

Written only through the registry (pipeline.nets.families), as a user's family would be.
"""

import keras

from pipeline.nets.families import register_family
from pipeline.nets.layers import make_norm_layer


@register_family("mlp")
def mlp(config, input_shape, num_outputs, norm):
    units = config.model.hidden_units
    inputs = keras.Input(input_shape, name="inputs")
    x = keras.layers.Flatten(name="flatten")(inputs)
    for i in range(1, config.model.depth):
        x = keras.layers.Dense(units, name=f"dense{i}")(x)
        layer = make_norm_layer(norm, units, f"norm{i}")
        x = layer(x) if layer is not None else x
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    outputs = keras.layers.Dense(num_outputs, name=f"dense{config.model.depth}")(x)
    return keras.Model(inputs, outputs, name=f"mlp{config.model.depth}_{norm}")
