"""A user's data set, named in the config as `data.loader: "package.module:function"`.

The function is called with the run's `DataConfig` (its own settings: `seed`, sizes) and
returns the training and test arrays, as a tuple `(x_train, y_train, x_test, y_test)` or
a dict with those keys (and optionally `num_classes`):

- inputs: one row an example, any shape after it; uint8 images (N, H, W, C) are
  standardized per channel like the built-in image sets (`data.standardize`) and may be
  augmented (`data.augment`); real-valued inputs are used as given (float32);
- a classification's labels: whole numbers, shape (N,), from 0 to num_classes - 1
  (`num_classes` defaults to the largest label + 1);
- a regression's targets: real numbers, shape (N, k); the loss is the squared error
  summed over the batch, as the paper's deep linear network's.

Each way the arrays can be wrong (shapes, dtypes, label range, non-finite values) is
one `UserCodeError` naming data.loader, the array and what was found.
"""

import numpy as np

from pipeline.core.user_code import UserCodeError, import_callable

NAMES = ("x_train", "y_train", "x_test", "y_test")


def _unpack(key, result):
    if isinstance(result, dict):
        missing = [name for name in NAMES if name not in result]
        if missing:
            raise UserCodeError(f"{key} returned a dict without {', '.join(missing)}; return "
                                f"{', '.join(NAMES)} (and optionally num_classes)")
        return [result[name] for name in NAMES], result.get("num_classes")
    if isinstance(result, (tuple, list)) and len(result) == 4:
        return list(result), None
    raise UserCodeError(f"{key} returned {type(result).__name__}"
                        + (f" of {len(result)} items" if isinstance(result, (tuple, list)) else "")
                        + f"; return the tuple ({', '.join(NAMES)}) or a dict with those keys")


def _array(key, name, value):
    try:
        array = np.asarray(value)
    except Exception as error:  # noqa: BLE001 - whatever the user's object is
        raise UserCodeError(f"{key}: {name} is not an array ({error})") from None
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise UserCodeError(f"{key}: {name} holds {array.dtype} values; give numbers")
    if array.ndim == 0 or len(array) == 0:
        raise UserCodeError(f"{key}: {name} has shape {array.shape}; it needs one row an "
                            "example and at least one example")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise UserCodeError(f"{key}: {name} holds {bad:,} NaN or infinite value(s); clean or "
                            "drop those examples")
    return array


def validated(key, result):
    """(x_train, y_train, x_test, y_test, num_classes) from what the loader returned;
    num_classes is 0 for a regression."""
    arrays, num_classes = _unpack(key, result)
    x_train, y_train, x_test, y_test = (_array(key, n, a) for n, a in zip(NAMES, arrays))
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if len(x) != len(y):
            raise UserCodeError(f"{key}: x_{split} has {len(x):,} rows but y_{split} {len(y):,}; "
                                "give one label or target a row")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UserCodeError(f"{key}: x_train's examples have shape {x_train.shape[1:]}, "
                            f"x_test's {x_test.shape[1:]}; they must be the same")
    if x_train.dtype != np.uint8:
        x_train, x_test = x_train.astype(np.float32), x_test.astype(np.float32)
    elif x_train.ndim != 4 or x_test.dtype != np.uint8:
        raise UserCodeError(f"{key}: uint8 inputs are images, (N, height, width, channels) in "
                            f"both splits; x_train has shape {x_train.shape}, x_test dtype "
                            f"{x_test.dtype}")
    if np.issubdtype(y_train.dtype, np.floating) or np.issubdtype(y_test.dtype, np.floating):
        if y_train.ndim != 2 or y_train.shape[1:] != y_test.shape[1:]:
            raise UserCodeError(f"{key}: real-valued targets make a regression, shape (N, k) "
                                f"in both splits; y_train has shape {y_train.shape}, y_test "
                                f"{y_test.shape} (for classes, give whole-number labels)")
        return x_train, y_train.astype(np.float32), x_test, y_test.astype(np.float32), 0
    if y_train.ndim != 1 or y_test.ndim != 1:
        raise UserCodeError(f"{key}: class labels have shape (N,); y_train has shape "
                            f"{y_train.shape}, y_test {y_test.shape}")
    low = min(int(y_train.min()), int(y_test.min()))
    high = max(int(y_train.max()), int(y_test.max()))
    classes = high + 1 if num_classes is None else num_classes
    if not isinstance(classes, (int, np.integer)) or classes < 2:
        raise UserCodeError(f"{key}: num_classes={classes!r}; a classification needs at least "
                            "2 classes")
    if low < 0 or high >= classes:
        raise UserCodeError(f"{key}: labels run from {low} to {high}; they must be 0 .. "
                            f"{classes - 1} (num_classes={classes})")
    return (x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64), int(classes))


def load(config):
    """The validated arrays of `config.loader` (a `DataConfig`'s), called with `config`."""
    key = f"data.loader={config.loader!r}"
    loader = import_callable("data.loader", config.loader)
    try:
        result = loader(config)
    except Exception as error:  # noqa: BLE001 - the user's code may raise anything
        raise UserCodeError(f"{key}: calling it with the run's data config raised "
                            f"{type(error).__name__}: {error}") from None
    return validated(key, result)
