"""What this machine can hold: numbers in float32 (`not_float32`), and how much memory a
config's model and data set need, estimated before anything is built, so that a run too large for the machine is refused with one line naming the
figure and the limit, not killed by the kernel minutes later (exit 137).

The estimate is deliberately rough and low: float32 weights with their gradients, the
optimizer's slot and a checkpoint's copy (4 copies); the activations of one batch kept
for the backward pass (each conv/dense output, its norm and its ReLU, twice for their
gradients); the training and test sets as float32 arrays. A config refused here would
not have run; one that passes may still need more (XLA's buffers, TensorFlow's pools)."""

import os

# (convolutions per block) of VGG11/13/16/19; blocks have 64, 128, 256, 512, 512
# channels (x model.width_multiplier) and halve the 32 x 32 input after each.
VGG_BLOCKS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3),
              19: (2, 2, 4, 4, 4)}
VGG_CHANNELS = (64, 128, 256, 512, 512)
IMAGE_SIDE, IMAGE_CHANNELS, CLASSES = 32, 3, 100  # CIFAR-sized inputs, at most 100 classes
FLOAT = 4  # bytes
WEIGHT_COPIES = 4      # weights, gradients, optimizer slot, checkpoint
ACTIVATION_COPIES = 6  # per layer output: conv, norm, ReLU, each with its gradient
# The share of the machine's memory a run may take (the rest: the OS, other runs).
SHARE = 0.8


def _vgg(model, batch):
    """(parameters, activation values of one batch) of the VGG."""
    parameters, activations, channels, side = 0, 0, IMAGE_CHANNELS, IMAGE_SIDE
    for convolutions, width in zip(VGG_BLOCKS.get(model.depth, VGG_BLOCKS[19]), VGG_CHANNELS):
        out = max(1, round(width * model.width_multiplier))
        for _ in range(convolutions):
            parameters += 9 * channels * out
            activations += side * side * out
            channels = out
        side = max(1, side // 2)
    parameters += channels * model.hidden_units + model.hidden_units * CLASSES
    return parameters, activations * batch


def _dln(model, data):
    dim = data.regression_dim
    return model.depth * dim * dim, model.depth * dim * data.regression_train_size


def _data_values(data):
    if data.name == "linear_regression":
        return 2 * data.regression_dim * (data.regression_train_size + data.regression_test_size)
    examples = (data.synthetic_train_size + data.synthetic_test_size
                if data.name == "synthetic" else 60_000)  # CIFAR's; digits has 1,797
    return examples * IMAGE_SIDE * IMAGE_SIDE * IMAGE_CHANNELS


def estimated_bytes(config):
    """Bytes a run of `config` needs at least (see the module's docstring)."""
    model, data = config.model, config.data
    parameters = activations = 0  # a family without an estimate here: its data only
    if model.factory is None and model.family == "dln":
        parameters, activations = _dln(model, data)
    elif model.factory is None and model.family == "vgg":
        parameters, activations = _vgg(model, data.batch_size)
    data_values = 0 if data.loader is not None else _data_values(data)
    return FLOAT * (WEIGHT_COPIES * parameters + ACTIVATION_COPIES * activations + data_values)


# The largest and smallest normal float32: runs compute in float32 (train.precision's
# variables included), where a value beyond them is inf or loses its digits on the way
# to 0 (1e-50 is 0 there: a "finished" run that never moved).
FLOAT32_MAX, FLOAT32_TINY = 3.4028234663852886e38, 1.1754943508222875e-38


def not_float32(value):
    """Why the finite number `value` is no number in float32 ('' if it is one)."""
    if abs(value) > FLOAT32_MAX or 0 < abs(value) < FLOAT32_TINY:
        return ("is not representable in float32, the precision runs compute in (magnitudes "
                f"from {FLOAT32_TINY:.3g} to {FLOAT32_MAX:.3g}, or 0); give a value in that range")
    return ""


def machine_bytes():
    """The machine's physical memory in bytes (None where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def too_large(config):
    """Why `config`'s model or data set cannot fit in this machine's memory, with the
    estimate and the limit ('' if it may fit, or the machine's memory is unknown)."""
    limit, needed = machine_bytes(), estimated_bytes(config)
    if limit is None or needed <= SHARE * limit:
        return ""
    model, data = config.model, config.data
    return (f"this run needs at least ~{needed / 2 ** 30:,.1f} GiB (model.family="
            f"{model.family}, model.depth={model.depth}, model.width_multiplier="
            f"{model.width_multiplier:g}, data.batch_size={data.batch_size}, "
            f"data.regression_dim={data.regression_dim}: weights, activations and data), "
            f"more than {SHARE:.0%} of this machine's {limit / 2 ** 30:,.1f} GiB; make the "
            "model or batch smaller")
