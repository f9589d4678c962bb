"""Data sets -> `tf.data.Dataset` of `(inputs, targets)` batches.

Every source is first loaded as NumPy arrays (`load_arrays`): CIFAR through
tensorflow-datasets or the official *binary* archive, scikit-learn's digits, a seeded
synthetic CIFAR-shaped set, and the deep-linear-network regression task. The same
pipeline then serves all of them (`make_dataset`).

The training stream is indexed by step: batch `s` is a pure function of (run seed, s),
so a resumed run starts at any step in O(1) with exactly the batches an uninterrupted
run would see, and a probe can ask for the batch of any step (`batch_at`).
"""

import functools
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipeline.core.config import DATASETS, ConfigError
from pipeline.core.errors import UserError
from pipeline.inputs import user_data

AUGMENT_PAD = 4  # pixels of zero padding before the random 32x32 crop

# CIFAR binary format (https://www.cs.toronto.edu/~kriz/cifar.html): each record is the
# label byte(s) then 3072 pixel bytes as three 32x32 planes (R, G, B).
BINARY_FORMATS = {
    # name: (archive file, training members, test members, label bytes, classes)
    "cifar10": ("cifar-10-binary.tar.gz",
                [f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)],
                ["cifar-10-batches-bin/test_batch.bin"], 1, 10),
    "cifar100": ("cifar-100-binary.tar.gz", ["cifar-100-binary/train.bin"],
                 ["cifar-100-binary/test.bin"], 2, 100),
}
IMAGE_BYTES = 32 * 32 * 3


class DatasetUnavailableError(UserError, RuntimeError):
    """A data set cannot be read; the message says which, where we looked and what to do."""


@dataclass(frozen=True)
class Arrays:
    """A data set in memory. Images are uint8 NHWC; regression inputs float32."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int  # 0 for regression

    @property
    def is_image(self):
        return self.x_train.ndim == 4

    @property
    def input_shape(self):
        """One example's input shape, e.g. (32, 32, 3)."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_outputs(self):
        """Outputs a network gives an example: one logit a class, or the regression's
        target dimension."""
        return self.num_classes or int(self.y_train.shape[1])

    def train_inputs(self, standardize):
        """The training inputs preprocessed once per data set (a float32 tensor), shared
        by every stream built on it: the training pipeline, the probes' batches and the
        recomputed BN statistics (on CIFAR-10 each copy would be ~600 MB)."""
        cache = self.__dict__.setdefault("_train_inputs", {})
        if standardize not in cache:
            cache[standardize] = _preprocess(standardize, self.stats)(tf.constant(self.x_train))
        return cache[standardize]

    @functools.cached_property
    def stats(self):
        """Standardization statistics, computed once: `channel_stats` for images,
        (0, 1) for regression inputs (which are not standardized)."""
        return channel_stats(self) if self.is_image else (np.zeros(1), np.ones(1))


def _how_to_get(name):
    archive = BINARY_FORMATS[name][0]
    return (f"Either run once on a machine with network access (tensorflow-datasets downloads "
            f"{name} into data.data_dir), or download {archive} from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html and set data.source=binary "
            f"data.data_dir=/path/to/{archive}. Offline, use data.name=digits or synthetic.")


# Where tensorflow-datasets downloads CIFAR from (its cifar builder's URLs).
CIFAR_HOST = ("www.cs.toronto.edu", 443)


def _can_reach(address, timeout=5.0):
    import socket
    try:
        socket.create_connection(address, timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_tfds(config):
    import tensorflow_datasets as tfds
    where = config.data_dir or "the tensorflow-datasets default folder (~/tensorflow_datasets)"

    def load(download):
        return tfds.load(config.name, split=["train", "test"], data_dir=config.data_dir,
                         as_supervised=True, download=download)
    try:
        try:
            splits = load(download=False)  # already prepared: no network needed
        except Exception:  # noqa: BLE001 - tfds raises many kinds for "not there"
            if not config.download:
                raise
            # Offline, tfds would retry the download for minutes before failing.
            if not _can_reach(CIFAR_HOST):
                raise DatasetUnavailableError(
                    f"{config.name} is not in {where} and {CIFAR_HOST[0]} cannot be reached "
                    "to download it (no network?). " + _how_to_get(config.name)) from None
            splits = load(download=True)
        # Read in chunks rather than with batch_size=-1, which needs a known cardinality.
        arrays = []
        for split in splits:
            chunks = list(tfds.as_numpy(split.batch(10_000)))
            arrays += [np.concatenate([c[0] for c in chunks]).astype(np.uint8),
                       np.concatenate([c[1] for c in chunks]).astype(np.int64)]
    except DatasetUnavailableError:
        raise
    except Exception as error:  # tfds raises many kinds (network, assertion, file errors)
        raise DatasetUnavailableError(
            f"Could not load {config.name} with tensorflow-datasets from {where} "
            f"(download={config.download}): {type(error).__name__}: {str(error)[:300]}. "
            + _how_to_get(config.name)) from None
    return Arrays(*arrays, BINARY_FORMATS[config.name][4])


def _read_records(archive, members, label_bytes, path):
    """Concatenate the records of `members`; returns (images NHWC uint8, fine labels)."""
    record = label_bytes + IMAGE_BYTES
    chunks = []
    for member in members:
        try:
            handle = archive.extractfile(member)
        except KeyError:
            raise DatasetUnavailableError(
                f"{path} has no member {member}: not an official CIFAR binary archive") from None
        if handle is None:  # a folder (or a link) where the batch file belongs
            raise DatasetUnavailableError(
                f"{path}: its member {member} is not a file: not an official CIFAR binary "
                "archive; download the archive again")
        raw = handle.read()
        if len(raw) == 0 or len(raw) % record:
            raise DatasetUnavailableError(
                f"{path}: {member} holds {len(raw)} bytes, not a whole number of "
                f"{record}-byte records; the archive is corrupt or truncated")
        chunks.append(np.frombuffer(raw, np.uint8).reshape(-1, record))
    records = np.concatenate(chunks)
    labels = records[:, label_bytes - 1].astype(np.int64)  # CIFAR-100: the fine label
    images = records[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _load_binary(config):
    filename, train_members, test_members, label_bytes, classes = BINARY_FORMATS[config.name]
    path = Path(config.data_dir or ".").expanduser()
    if path.is_dir():
        path = path / filename
    if not path.is_file():
        raise DatasetUnavailableError(
            f"{config.name} binary archive not found at {path}. " + _how_to_get(config.name))
    try:
        with tarfile.open(path, "r:gz") as archive:
            x_train, y_train = _read_records(archive, train_members, label_bytes, path)
            x_test, y_test = _read_records(archive, test_members, label_bytes, path)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DatasetUnavailableError(
            f"{path} cannot be read as a {filename} archive ({error}); the file is corrupt "
            "or truncated. " + _how_to_get(config.name)) from None
    if y_train.max() >= classes or y_test.max() >= classes:
        raise DatasetUnavailableError(f"{path}: labels above {classes - 1}; wrong archive?")
    return Arrays(x_train, y_train, x_test, y_test, classes)


def _load_digits(config):
    """scikit-learn's 1,797 real 8x8 digits, upsampled 4x (nearest) to 32x32x3."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 -> 0..255
    images = images.repeat(4, axis=1).repeat(4, axis=2)[..., None].repeat(3, axis=3)
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target.astype(np.int64), test_size=0.2, random_state=config.seed,
        stratify=digits.target)
    return Arrays(x_train, y_train, x_test, y_test, 10)


def _load_synthetic(config):
    """Seeded CIFAR-shaped images: a smooth per-class template plus pixel noise.

    Templates are 4x4x3 Gaussian patterns upsampled 8x, so classes differ in coarse
    colour layout that a conv net learns in a few hundred steps; the noise (std 48 on
    a 0..255 scale) keeps the task from being trivial.
    """
    rng = np.random.default_rng(config.seed)
    templates = rng.normal(0.0, 1.0, (10, 4, 4, 3)).repeat(8, axis=1).repeat(8, axis=2)

    def sample(n):
        labels = rng.integers(0, 10, n)
        pixels = 128 + 40 * templates[labels] + rng.normal(0.0, 48.0, (n, 32, 32, 3))
        return np.clip(pixels, 0, 255).astype(np.uint8), labels.astype(np.int64)

    x_train, y_train = sample(config.synthetic_train_size)
    x_test, y_test = sample(config.synthetic_test_size)
    return Arrays(x_train, y_train, x_test, y_test, 10)


def _load_linear_regression(config):
    """The DLN task: x ~ N(0, I), targets A x with A_ij ~ N(0, s^2), s =
    `regression_target_scale` (fixed by data.seed)."""
    rng = np.random.default_rng(config.seed)
    dim = config.regression_dim
    matrix = rng.normal(size=(dim, dim)) * config.regression_target_scale
    x_train = rng.normal(size=(config.regression_train_size, dim))
    x_test = rng.normal(size=(config.regression_test_size, dim))
    f32 = np.float32
    return Arrays(x_train.astype(f32), (x_train @ matrix.T).astype(f32),
                  x_test.astype(f32), (x_test @ matrix.T).astype(f32), 0)


def _load_archive(config):
    return _load_binary(config) if config.source == "binary" else _load_tfds(config)


# data.name -> loader(DataConfig) -> Arrays; pipeline.core.config.DATASETS names these.
LOADERS = {"cifar10": _load_archive, "cifar100": _load_archive, "digits": _load_digits,
           "synthetic": _load_synthetic, "linear_regression": _load_linear_regression}
if tuple(LOADERS) != DATASETS:
    raise ImportError("pipeline.core.config.DATASETS must list the data sets of LOADERS, in order")


def load_arrays(config):
    """Load the data set of `config.data` (a `DataConfig`) as `Arrays`, subset to
    n_train/n_test: the user's `data.loader` if set (pipeline.inputs.user_data), else data.name's."""
    arrays = (Arrays(*user_data.load(config)) if config.loader
              else LOADERS[config.name](config))
    return Arrays(arrays.x_train[:config.n_train], arrays.y_train[:config.n_train],
                  arrays.x_test[:config.n_test], arrays.y_test[:config.n_test],
                  arrays.num_classes)


def channel_stats(arrays):
    """Per-channel mean and std of the training images on the 0..1 scale, shape (3,)."""
    x = arrays.x_train.astype(np.float64) / 255.0
    std = x.std(axis=(0, 1, 2))
    # A channel with one value throughout (a user's grey images) is centred, not divided
    # by 0 into NaN inputs.
    return x.mean(axis=(0, 1, 2)), np.where(std > 0, std, 1.0)


def _preprocess(standardize, stats):
    """uint8 images -> float32 (standardized per channel); regression inputs pass through.
    Elementwise, so it applies to one image or a whole array alike."""
    mean, std = (tf.constant(s, tf.float32) for s in stats)

    def apply(x):
        if x.dtype != tf.uint8:
            return x
        x = tf.cast(x, tf.float32) / 255.0
        return (x - mean) / std if standardize else x
    return apply


def augment_batch(images, seed):
    """Zero-pad 4 pixels, take a random crop of the original size, maybe flip; for a
    whole batch (N, H, W, C) at once, stateless in `seed` (shape (2,), int64).

    Example i gets its own offsets and flip from one seeded draw for the batch. The crop
    and the flip are one pair of gathers with per-example row and column indices.
    """
    size = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    offset_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    offsets = tf.random.stateless_uniform([size, 2], offset_seed, 0, 2 * AUGMENT_PAD + 1, tf.int32)
    flip = tf.random.stateless_uniform([size, 1], flip_seed, 0, 2, tf.int32)
    padded = tf.pad(images, [[0, 0], [AUGMENT_PAD, AUGMENT_PAD], [AUGMENT_PAD, AUGMENT_PAD], [0, 0]])
    rows = offsets[:, :1] + tf.range(height)[None, :]                         # (N, H)
    columns = tf.range(width)[None, :]
    columns = offsets[:, 1:] + tf.where(flip == 1, width - 1 - columns, columns)  # (N, W)
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)                    # (N, H, W+2p, C)
    return tf.gather(cropped, columns, axis=2, batch_dims=1)                  # (N, H, W, C)


def batch_indices(step, seed, num_examples, batch_size):
    """Training-set rows of global batch `step`: epoch e is a seeded permutation and
    its last incomplete batch is dropped (the paper's fixed batch size)."""
    steps_per_epoch = num_examples // batch_size
    start = (step % steps_per_epoch) * batch_size
    return epoch_rows(step // steps_per_epoch, seed, num_examples, batch_size)[
        start:start + batch_size]


def epoch_rows(epoch, seed, num_examples, batch_size):
    """The order of the training rows in `epoch`, shape (num_examples,): a seeded
    permutation; for a batch of the whole training set (full-batch gradient descent,
    the DLN) the stored order at every step, since a permutation would change only the
    order of its sums."""
    if batch_size == num_examples:
        return tf.range(num_examples, dtype=tf.int64)
    return epoch_order(epoch, seed, num_examples)


def epoch_order(epoch, seed, num_examples):
    """The seeded permutation of the training rows in `epoch`, shape (num_examples,)."""
    return tf.random.experimental.stateless_shuffle(
        tf.range(num_examples, dtype=tf.int64),
        seed=tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)]))


def make_dataset(config, split, arrays=None, start_step=0, input_context=None):
    """Batched, prefetched `tf.data.Dataset` of `(inputs, targets)` for `split`.

    Args:
        config: the experiment `Config` (uses `config.data` and `config.seed`).
        split: "train" (endless, from `start_step`, `drop_remainder` by construction) or
            "test" (one pass, in order, last batch partial so every example counts).
        arrays: already loaded `Arrays` (loaded from `config.data` when None).
        start_step: first training step of the stream (resume).
        input_context: a `tf.distribute.InputContext` when called from
            `distribute_datasets_from_function`: this input pipeline then yields, for each
            step, its consecutive slice of the global batch in per-replica batches, so the
            replicas together see exactly the single-device global batch.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'. Received: {split!r}")
    arrays = arrays if arrays is not None else load_arrays(config.data)
    if split == "train":
        return TrainStream(config, arrays, input_context).dataset(start_step)
    # Preprocessed once as a whole array; the test set is re-read at every evaluation.
    x_test = _preprocess(config.data.standardize, arrays.stats)(tf.constant(arrays.x_test))
    ds = tf.data.Dataset.from_tensor_slices((x_test, arrays.y_test))
    return ds.batch(config.data.eval_batch_size).prefetch(tf.data.AUTOTUNE)


class TrainStream:
    """The training batches of every step, a pure function of (run seed, step).

    Built once per data set and input pipeline: it preprocesses the whole training set
    once (float32, standardized) and keeps it as a tensor, so the batch of a step is one
    gather of its rows (plus a batched augmentation when on). Whole-batch ops only: a
    per-example `map` pays tf.data's per-element overhead on every example.
    `dataset(start_step)` and `batch(step)` are then cheap to make.
    """

    def __init__(self, config, arrays, input_context=None):
        data = config.data
        self.global_batch = data.batch_size
        self.num_examples = len(arrays.x_train)
        if self.num_examples < self.global_batch:
            size_key = {"synthetic": "data.synthetic_train_size",
                        "linear_regression": "data.regression_train_size"}.get(
                data.name, "data.n_train") if data.n_train is None else "data.n_train"
            raise ConfigError(
                f"data.batch_size={self.global_batch} exceeds the {self.num_examples} training "
                f"examples of {data.name}; lower data.batch_size or raise {size_key}")
        self.steps_per_epoch = self.num_examples // self.global_batch
        pipelines, pipeline_id, self.replica_batch = 1, 0, self.global_batch
        if input_context is not None:
            pipelines = input_context.num_input_pipelines
            pipeline_id = input_context.input_pipeline_id
            self.replica_batch = input_context.get_per_replica_batch_size(self.global_batch)
        self.local_batch = self.global_batch // pipelines
        self.lo = pipeline_id * self.local_batch
        self.x_train = arrays.train_inputs(data.standardize)
        self.y_train = tf.constant(arrays.y_train)
        self.augment = data.augment and arrays.is_image
        # Full-batch gradient descent without augmentation: every step's batch is the
        # same tensors, so they are made once (see `dataset`; the JAX engine also keeps
        # them on the device).
        self.same_every_step = self.num_examples == self.global_batch and not self.augment
        self.seed = config.seed

    def _epoch_steps(self, epoch):
        """(step, global rows) of every step of `epoch`: one order per epoch."""
        rows = epoch_rows(epoch, self.seed, self.num_examples, self.global_batch)
        rows = tf.reshape(rows[:self.steps_per_epoch * self.global_batch],
                          [self.steps_per_epoch, self.global_batch])
        steps = epoch * self.steps_per_epoch + tf.range(self.steps_per_epoch, dtype=tf.int64)
        return tf.data.Dataset.from_tensor_slices((steps, rows))

    def _load(self, step, rows):
        """This input pipeline's share of the global batch of `step`, shape (local_batch, ...)."""
        x = tf.gather(self.x_train, rows)
        if self.augment:
            # Drawn for the whole global batch from (seed, step), then sliced, so an
            # example's crop does not depend on how many pipelines share the batch.
            x = augment_batch(x, tf.stack([tf.cast(self.seed, tf.int64), step]))
        y = tf.gather(self.y_train, rows)
        return x[self.lo:self.lo + self.local_batch], y[self.lo:self.lo + self.local_batch]

    def _replica_batches(self, x, y):
        """Split a pipeline's share into consecutive per-replica batches."""
        parts = self.local_batch // self.replica_batch
        return tf.data.Dataset.from_tensor_slices(
            (tf.reshape(x, [parts, self.replica_batch, *x.shape[1:]]),
             tf.reshape(y, [parts, self.replica_batch, *y.shape[1:]])))

    def dataset(self, start_step=0):
        """Endless batches from `start_step` on (`drop_remainder` by construction)."""
        if self.same_every_step:
            # Made once, not gathered per step (the gather cost a standard DLN ~0.27 ms
            # a step, about what its step did).
            ds = tf.data.Dataset.from_tensors(
                self._load(tf.constant(start_step, tf.int64),
                           epoch_rows(0, self.seed, self.num_examples, self.global_batch))
            ).repeat()
        else:
            first_epoch = start_step // self.steps_per_epoch
            ds = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(
                self._epoch_steps)
            ds = ds.skip(start_step - first_epoch * self.steps_per_epoch)
            # Sequential map: the order must never depend on timing, and one gather per
            # step is cheap; prefetch overlaps it with the training step.
            ds = ds.map(self._load)
        if self.local_batch != self.replica_batch:
            ds = ds.flat_map(self._replica_batches)
        return ds.prefetch(tf.data.AUTOTUNE)

    def drain(self, count):
        """Make the first `count` batches and drop them, inside tf.data (no Python per
        batch, as the training loop reads the stream); returns how many it made."""
        return int(self.dataset(0).take(count).reduce(tf.constant(0, tf.int64),
                                                      lambda n, _: n + 1))

    def batch(self, step):
        """The batch of `step` as tensors (the global batch without an input context)."""
        step = tf.constant(step, tf.int64)
        return self._load(step, batch_indices(step, self.seed, self.num_examples,
                                              self.global_batch))


def batch_at(config, arrays, step):
    """The global training batch of `step` as tensors (what the train step saw)."""
    return TrainStream(config, arrays).batch(step)
