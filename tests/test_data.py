"""Data sources, the step-indexed training stream, preprocessing and clear errors."""

import io
import tarfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from conftest import make_config
from pipeline.inputs.data import (DatasetUnavailableError, _preprocess, augment_batch, batch_at,
                           channel_stats, load_arrays, make_dataset)


def _take(ds, n):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


def test_synthetic_is_seeded_byte_for_byte_and_learnable_shaped():
    config = make_config("data.synthetic_train_size=300", "data.synthetic_test_size=50")
    a, b = load_arrays(config.data), load_arrays(config.data)
    assert a.x_train.shape == (300, 32, 32, 3) and a.x_train.dtype == np.uint8
    assert a.x_train.tobytes() == b.x_train.tobytes() and (a.y_train == b.y_train).all()
    other = load_arrays(make_config("data.seed=1", "data.synthetic_train_size=300").data)
    assert other.x_train.tobytes() != a.x_train.tobytes()
    # Class structure: the class means differ far more than noise / sqrt(n) would make them.
    means = np.stack([a.x_train[a.y_train == c].mean(axis=0) for c in range(10)])
    assert means.std(axis=0).mean() > 20


def test_digits_are_real_upsampled_and_split_reproducibly():
    arrays = load_arrays(make_config("data.name=digits").data)
    assert arrays.x_train.shape == (1437, 32, 32, 3) and arrays.x_test.shape == (360, 32, 32, 3)
    from sklearn.datasets import load_digits
    digits = load_digits()
    # Each 4x4 block and channel holds one original pixel (0..16 scaled to 0..255).
    first = arrays.x_train[0, ::4, ::4, 0]
    matches = np.all(np.abs(digits.images * 255 / 16 - first) < 0.51, axis=(1, 2))
    assert matches.any()
    assert (arrays.x_train[..., 0] == arrays.x_train[..., 2]).all()
    again = load_arrays(make_config("data.name=digits").data)
    assert (again.y_test == arrays.y_test).all()
    assert np.bincount(arrays.y_test).min() >= 35  # stratified: ~36 of each class


def test_linear_regression_targets_are_a_fixed_linear_map():
    arrays = load_arrays(make_config("data.name=linear_regression", "model.family=dln").data)
    assert arrays.x_train.shape == (1000, 10) and arrays.y_train.dtype == np.float32
    solution, *_ = np.linalg.lstsq(arrays.x_train, arrays.y_train, rcond=None)
    np.testing.assert_allclose(arrays.x_test @ solution, arrays.y_test, rtol=1e-3, atol=1e-3)


def test_training_stream_is_deterministic_resumable_and_covers_each_epoch():
    config = make_config("data.synthetic_train_size=256", "data.batch_size=64")
    arrays = load_arrays(config.data)
    first = _take(make_dataset(config, "train", arrays=arrays), 6)
    second = _take(make_dataset(config, "train", arrays=arrays), 6)
    for (x1, y1), (x2, y2) in zip(first, second):
        assert x1.tobytes() == x2.tobytes() and (y1 == y2).all()
    resumed = _take(make_dataset(config, "train", arrays=arrays, start_step=5), 1)[0]
    assert resumed[0].tobytes() == first[5][0].tobytes()
    np.testing.assert_array_equal(batch_at(config, arrays, 5)[0].numpy(), first[5][0])
    # Steps 0..3 are one epoch: every example exactly once (images are unique rows).
    epoch = np.concatenate([x for x, _ in first[:4]]).reshape(256, -1)
    assert len(np.unique(epoch, axis=0)) == 256
    assert not np.array_equal(first[4][0], first[0][0])  # the next epoch is reshuffled
    reseeded = _take(make_dataset(make_config("seed=1", "data.synthetic_train_size=256",
                                              "data.batch_size=64"), "train", arrays=arrays), 1)
    assert reseeded[0][0].tobytes() != first[0][0].tobytes()


def test_standardization_uses_training_statistics_eagerly_and_in_tf_data():
    config = make_config("data.synthetic_train_size=128", "data.batch_size=128")
    arrays = load_arrays(config.data)
    mean, std = channel_stats(arrays)
    pixels = arrays.x_train.astype(np.float64) / 255
    np.testing.assert_allclose(mean, pixels.mean(axis=(0, 1, 2)))
    # One batch of 128 = the whole training set: standardized, it has mean 0, std 1.
    x, _ = _take(make_dataset(config, "train", arrays=arrays), 1)[0]
    np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1, atol=1e-4)
    # The same function eagerly gives what tf.data gave; the test split uses train stats.
    eager = _preprocess(True, (mean, std))(tf.constant(arrays.x_test[:4])).numpy()
    x_test, y_test = _take(make_dataset(config, "test", arrays=arrays), 1)[0]
    np.testing.assert_allclose(x_test[:4], eager, rtol=1e-6)
    np.testing.assert_allclose(eager, (arrays.x_test[:4] / 255 - mean) / std, rtol=1e-5, atol=1e-5)
    assert (y_test == arrays.y_test[:len(y_test)]).all()


def test_test_split_keeps_every_example_in_order():
    config = make_config("data.synthetic_test_size=130", "data.eval_batch_size=50")
    arrays = load_arrays(config.data)
    sizes = [len(y) for _, y in make_dataset(config, "test", arrays=arrays)]
    assert sizes == [50, 50, 30]


def test_augmentation_is_a_seeded_crop_of_the_padded_image_with_optional_flip(rng):
    images = tf.constant(rng.normal(size=(64, 32, 32, 3)), tf.float32)
    seed = tf.constant([3, 9], tf.int64)
    out = augment_batch(images, seed).numpy()
    np.testing.assert_array_equal(out, augment_batch(images, seed).numpy())
    padded = np.pad(images.numpy(), ((0, 0), (4, 4), (4, 4), (0, 0)))
    kinds = set()
    for image, source in zip(out, padded):
        # Each output is one of the 81 crops of its own padded image, maybe mirrored.
        found = [(i, j, flipped) for i in range(9) for j in range(9) for flipped in (0, 1)
                 if np.array_equal(image, source[i:i + 32, j:j + 32][:, ::-1 if flipped else 1])]
        assert found, "an output is not a crop of its padded input"
        kinds.add(found[0])
    assert len(kinds) > 20  # offsets and flips vary between the examples of one batch
    assert augment_batch(images, tf.constant([3, 10], tf.int64)).numpy().tobytes() != out.tobytes()
    config = make_config("data.synthetic_train_size=64", "data.batch_size=32", "data.augment=true")
    arrays = load_arrays(config.data)
    augmented = _take(make_dataset(config, "train", arrays=arrays), 1)[0][0]
    plain = _take(make_dataset(make_config("data.synthetic_train_size=64", "data.batch_size=32"),
                               "train", arrays=arrays), 1)[0][0]
    assert augmented.shape == plain.shape and not np.array_equal(augmented, plain)


@pytest.mark.parametrize("augment", [False, True])
def test_input_pipelines_split_each_global_batch_without_changing_it(augment):
    config = make_config("data.synthetic_train_size=128", "data.batch_size=32",
                         f"data.augment={str(augment).lower()}")
    arrays = load_arrays(config.data)
    whole = _take(make_dataset(config, "train", arrays=arrays), 2)
    # Any replica count: 1 pipeline feeding 4 replicas, 2 pipelines feeding 2 each, 4 of 1.
    for pipelines, replicas in ((1, 4), (2, 4), (4, 4), (2, 2)):
        parts = []
        for pipeline_id in range(pipelines):
            context = tf.distribute.InputContext(num_input_pipelines=pipelines,
                                                 input_pipeline_id=pipeline_id,
                                                 num_replicas_in_sync=replicas)
            per_step = replicas // pipelines
            parts.append(_take(make_dataset(config, "train", arrays=arrays,
                                            input_context=context), 2 * per_step))
        for step in range(2):
            # Replica order: pipeline 0's replicas, then pipeline 1's, ...
            pieces = [parts[p][per_step * step + r] for p in range(pipelines)
                      for r in range(per_step)]
            np.testing.assert_array_equal(np.concatenate([x for x, _ in pieces]), whole[step][0])
            np.testing.assert_array_equal(np.concatenate([y for _, y in pieces]), whole[step][1])


def test_batches_are_the_same_after_a_resume_at_any_step_and_through_epochs():
    config = make_config("data.synthetic_train_size=100", "data.batch_size=32", "data.augment=true")
    arrays = load_arrays(config.data)  # 3 steps per epoch, 4 examples dropped each epoch
    stream = _take(make_dataset(config, "train", arrays=arrays), 8)
    for start in (1, 3, 4, 7):
        resumed = _take(make_dataset(config, "train", arrays=arrays, start_step=start), 8 - start)
        for offset, (x, y) in enumerate(resumed):
            assert x.tobytes() == stream[start + offset][0].tobytes(), (start, offset)
            assert (y == stream[start + offset][1]).all()
        x, y = batch_at(config, arrays, start)
        assert x.numpy().tobytes() == stream[start][0].tobytes()
    # Rows follow the per-epoch permutation: check step 4 (epoch 1, second batch) by hand.
    order = tf.random.experimental.stateless_shuffle(tf.range(100, dtype=tf.int64),
                                                     seed=tf.constant([0, 1], tf.int64)).numpy()
    np.testing.assert_array_equal(stream[4][1], arrays.y_train[order[32:64]])


def test_n_train_and_too_large_batches():
    config = make_config("data.n_train=100", "data.synthetic_train_size=300")
    assert len(load_arrays(config.data).x_train) == 100
    with pytest.raises(ValueError, match="data.batch_size=128 exceeds the 100 training"):
        make_dataset(config, "train")


def _write_binary_archive(path, name, train_counts, test_count, rng):
    """A small archive in the official layout; returns the images and labels written."""
    label_bytes = 1 if name == "cifar10" else 2
    if name == "cifar10":
        members = [f"cifar-10-batches-bin/data_batch_{i + 1}.bin" for i in range(len(train_counts))]
        members.append("cifar-10-batches-bin/test_batch.bin")
    else:
        members = ["cifar-100-binary/train.bin", "cifar-100-binary/test.bin"]
    written = []
    with tarfile.open(path, "w:gz") as archive:
        for member, count in zip(members, list(train_counts) + [test_count]):
            planes = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
            labels = rng.integers(0, 10, (count, label_bytes), dtype=np.uint8)
            raw = np.concatenate([labels, planes.reshape(count, -1)], axis=1).tobytes()
            info = tarfile.TarInfo(member)
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
            written.append((planes.transpose(0, 2, 3, 1), labels[:, -1]))
    return written


@pytest.mark.parametrize("name, train_counts", [("cifar10", [7, 5, 6, 4, 3]), ("cifar100", [9])])
def test_binary_archive_reader_decodes_the_official_layout(name, train_counts, tmp_path, rng):
    filename = {"cifar10": "cifar-10-binary.tar.gz", "cifar100": "cifar-100-binary.tar.gz"}[name]
    written = _write_binary_archive(tmp_path / filename, name, train_counts, 4, rng)
    # data_dir may name the folder or the file itself.
    for data_dir in (tmp_path, tmp_path / filename):
        arrays = load_arrays(make_config(f"data.name={name}", "data.source=binary",
                                         f"data.data_dir={data_dir}").data)
        np.testing.assert_array_equal(arrays.x_train, np.concatenate([w[0] for w in written[:-1]]))
        np.testing.assert_array_equal(arrays.y_train, np.concatenate([w[1] for w in written[:-1]]))
        np.testing.assert_array_equal(arrays.x_test, written[-1][0])
        assert arrays.num_classes == (10 if name == "cifar10" else 100)


def test_binary_archive_errors_name_the_path_and_the_fix(tmp_path, rng):
    config = make_config("data.name=cifar10", "data.source=binary", f"data.data_dir={tmp_path}")
    with pytest.raises(DatasetUnavailableError, match="binary archive not found at .*cifar-10-binary"):
        load_arrays(config.data)
    archive = tmp_path / "cifar-10-binary.tar.gz"
    archive.write_bytes(b"not a gzip file")
    with pytest.raises(DatasetUnavailableError, match="corrupt or truncated.*kriz/cifar"):
        load_arrays(config.data)
    with tarfile.open(archive, "w:gz") as tar:  # a record cut short
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        info.size = 3000
        tar.addfile(info, io.BytesIO(bytes(3000)))
    with pytest.raises(DatasetUnavailableError, match="3000 bytes, not a whole number of 3073"):
        load_arrays(config.data)
    with tarfile.open(archive, "w:gz") as tar:  # a folder where a batch file belongs
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    with pytest.raises(DatasetUnavailableError, match="data_batch_1.bin is not a file"):
        load_arrays(config.data)


def test_tfds_path_loads_cifar_shaped_arrays():
    with tfds.testing.mock_data(num_examples=24):
        arrays = load_arrays(make_config("data.name=cifar10").data)
        config = make_config("data.name=cifar100", "data.batch_size=8")
        hundred = load_arrays(config.data)
        x, y = _take(make_dataset(config, "train", arrays=hundred), 1)[0]
    assert arrays.x_train.shape == (24, 32, 32, 3) and arrays.x_train.dtype == np.uint8
    assert arrays.num_classes == 10 and hundred.num_classes == 100
    assert x.shape == (8, 32, 32, 3) and x.dtype == np.float32 and y.shape == (8,)


def test_missing_tfds_data_raises_one_clear_error(tmp_path):
    config = make_config("data.name=cifar10", f"data.data_dir={tmp_path}", "data.download=false")
    with pytest.raises(DatasetUnavailableError) as error:
        load_arrays(config.data)
    message = str(error.value)
    assert "cifar10" in message and str(tmp_path) in message
    assert "cifar-10-binary.tar.gz" in message and "data.name=digits" in message


def test_streams_of_one_data_set_share_one_preprocessed_training_set():
    config = make_config("data.synthetic_train_size=64", "data.batch_size=32")
    arrays = load_arrays(config.data)
    from pipeline.inputs.data import TrainStream
    assert TrainStream(config, arrays).x_train is TrainStream(config, arrays).x_train


@pytest.mark.parametrize("augment", [False, True])
def test_a_full_batch_is_the_training_set_in_stored_order_at_every_step(augment):
    # Full-batch gradient descent (the DLN): no permutation, from any start step, the
    # stream, `batch_at` and each input pipeline's share agree; with augmentation the
    # rows keep their order and only the crops change with the step.
    config = make_config("data.synthetic_train_size=64", "data.batch_size=64",
                         f"data.augment={str(augment).lower()}")
    arrays = load_arrays(config.data)
    stream = _take(make_dataset(config, "train", arrays=arrays), 3)
    for step, (x, y) in enumerate(stream):
        np.testing.assert_array_equal(y, arrays.y_train)
        assert x.tobytes() == batch_at(config, arrays, step)[0].numpy().tobytes()
    if not augment:
        np.testing.assert_allclose(stream[2][0], stream[0][0])
        standardized = np.asarray(arrays.train_inputs(config.data.standardize))
        np.testing.assert_array_equal(stream[0][0], standardized)
    resumed = _take(make_dataset(config, "train", arrays=arrays, start_step=2), 1)[0]
    assert resumed[0].tobytes() == stream[2][0].tobytes()
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                         num_replicas_in_sync=2)
    share = _take(make_dataset(config, "train", arrays=arrays, input_context=context), 1)[0]
    np.testing.assert_array_equal(share[1], arrays.y_train[32:])
