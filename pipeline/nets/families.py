"""Model families, a registry: a family is a factory registered under a name.

A factory is called as `factory(config, input_shape, num_outputs, norm)` and returns a
Keras model from inputs of `input_shape` (one example's shape, e.g. (32, 32, 3)) to
`num_outputs` numbers an example (the logits of a classification, the targets of a
regression). It builds each normalization layer with
`pipeline.nets.layers.make_norm_layer(norm, channels)`, passing on the `norm` it is
given, so `--grid model.norm=none,batch,layer,group` compares variants of one network;
the run's noise seeds, BN synchronization and noise constants reach those layers without
the factory passing them (`norm_settings`). `config` is the run's `Config`, for the
factory's own sizes (`config.model.depth`, `width_multiplier`, `hidden_units`, ...).

Built-in families register with `@register_family(name)` in a module of their own
(`models.py`: vgg, dln; `resnet.py`; `mlp.py`); a user's factory is named in the config
instead, `model.factory: "package.module:function"`, and gets everything a built-in
family gets (probes, evaluation, checkpoints, sweeps, claims, figures).
"""

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Callable, Optional

import keras

from pipeline.core.config import FAMILIES
from pipeline.core.user_code import UserCodeError, import_callable
from pipeline.nets.layers import norm_settings

# The modules that register the built-in families (each with @register_family).
BUILT_IN_MODULES = ("pipeline.nets.models", "pipeline.nets.resnet", "pipeline.nets.mlp")


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable
    # Default probe layers, 1-based weight-layer numbers ("layer #i"): {"ics": [...],
    # "distributions": [...]}; None: spread over the depth (`spread_layers`).
    layers: Optional[dict] = None

    def default_layers(self, probe, count):
        """The layers `probe` measures when its config names none, of `count`."""
        return list(self.layers[probe]) if self.layers else spread_layers(probe, count)


def spread_layers(probe, count):
    """Layers at a third and two thirds of the depth for ICS (the paper's VGG16 #5, #10
    and DLN #9, #17 sit there), never the first of several: no layer comes before it,
    so its ICS is 0 by definition (Definition 2.1). The first, the middle and the last
    but one for the activation distributions (the last one's outputs are the logits)."""
    lowest = min(2, count)
    third = {max(lowest, round(count / 3)), max(lowest, round(2 * count / 3))}
    spread = {1, max(1, (count + 1) // 2), max(1, count - 1)}
    return sorted(third if probe == "ics" else spread)


REGISTRY = {}


def register_family(name, layers=None):
    """Decorator: register `factory` as the model family `name` (`layers`: its default
    probe layers, see `Family.layers`)."""
    def register(factory):
        REGISTRY[name] = Family(name, factory, layers)
        return factory
    return register


def built_in_families():
    for module in BUILT_IN_MODULES:
        importlib.import_module(module)
    if tuple(sorted(REGISTRY)) != FAMILIES:
        raise ImportError(f"pipeline.core.config.FAMILIES {FAMILIES} must list the families "
                          f"the modules {BUILT_IN_MODULES} register: {sorted(REGISTRY)}")
    return REGISTRY


def family_of(config):
    """The `Family` that builds `config`'s network: the user's `model.factory`, else the
    registered `model.family`."""
    if config.model.factory:
        return Family(config.model.factory, import_callable("model.factory", config.model.factory))
    return built_in_families()[config.model.family]


def noise_settings(config):
    """The Algorithm-1 settings of `config.model.noise`, as the norm layers take them."""
    noise = dataclasses.asdict(config.model.noise)
    noise["noise_at_inference"] = noise.pop("at_inference")
    return noise


def build_model(config, input_shape, num_outputs):
    """The network of `config` for inputs of `input_shape` and `num_outputs` outputs an
    example. A user's factory that raises, returns something other than a Keras model,
    or a model whose inputs or outputs do not fit the data is a `UserCodeError` naming
    model.factory and what was found."""
    family, input_shape = family_of(config), tuple(int(d) for d in input_shape)
    key = f"model.factory={config.model.factory!r}" if config.model.factory else None
    with norm_settings(config.seed, config.model.sync_batch_norm, noise_settings(config)):
        if key is None:
            model = family.build(config, input_shape, num_outputs, config.model.norm)
        else:
            try:
                model = family.build(config, input_shape, num_outputs, config.model.norm)
            except Exception as error:  # noqa: BLE001 - the user's code may raise anything
                raise UserCodeError(f"{key}: calling it with (config, input_shape={input_shape},"
                                    f" num_outputs={num_outputs}, norm={config.model.norm!r}) "
                                    f"raised {type(error).__name__}: {error}") from None
    if key is not None:
        check_model(key, model, input_shape, num_outputs)
    return model


def check_model(key, model, input_shape, num_outputs):
    """Refuse (naming `key`) what is not a one-input, one-output Keras model from
    `input_shape` to (batch, num_outputs)."""
    if not isinstance(model, keras.Model):
        raise UserCodeError(f"{key} returned {type(model).__name__}, not a keras.Model; return "
                            "the model, e.g. keras.Model(inputs, outputs)")
    try:
        spec = model.compute_output_spec(keras.KerasTensor((None, *input_shape)))
    except Exception as error:  # noqa: BLE001 - a model that cannot take the data
        raise UserCodeError(f"{key}: its model does not take inputs of shape (batch, "
                            f"{', '.join(map(str, input_shape))}) as the data gives them: "
                            f"{type(error).__name__}: {str(error)[:300]}") from None
    shape = tuple(getattr(spec, "shape", ()) or ())
    if isinstance(spec, (list, tuple, dict)) or shape[1:] != (num_outputs,):
        found = (f"{len(spec)} outputs" if isinstance(spec, (list, tuple, dict))
                 else f"outputs of shape {shape}")
        raise UserCodeError(f"{key}: its model gives {found}; the task needs one output of "
                            f"shape (batch, {num_outputs}) (the logits of {num_outputs} classes, "
                            "or a regression's targets)")
