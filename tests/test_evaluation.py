"""Evaluation with recomputed BN statistics (PreciseBN): against a NumPy average of batch
statistics, free of side effects, and recorded beside the moving-average evaluation."""

import numpy as np
import pytest

from conftest import SMOKE, make_config, training_state
from pipeline.core.config import load_config
from pipeline.core.runs import RunDirectory
from pipeline.inputs.data import batch_at, make_dataset
from pipeline.training.evaluation import RecomputedStatistics, make_evaluate, statistic_slots
from pipeline.training.train import train_and_evaluate


@pytest.mark.both_backends
@pytest.mark.parametrize("norm", ["batch", "noisy_batch"])
def test_recomputed_statistics_are_the_numpy_average_of_batch_statistics(norm):
    # A 3-layer DLN: dense1 -> norm1 -> dense2 -> norm2 -> dense3, batches of 16 of 64.
    config = make_config("data.name=linear_regression", "model.family=dln", "model.depth=3",
                         f"model.norm={norm}", "data.regression_dim=4",
                         "data.regression_train_size=64", "data.batch_size=16", "eval.bn_batches=3")
    engine, model, optimizer, arrays = training_state(config)
    # Make the BN parameters and moving statistics non-trivial.
    rng = np.random.default_rng(0)
    for layer in (model.get_layer("norm1"), model.get_layer("norm2")):
        for variable in (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance):
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
    before = [v.numpy().copy() for v in model.variables]
    non_trainable = RecomputedStatistics(engine, model, config, arrays, 3)(
        engine.values(model.trainable_variables), engine.values(model.non_trainable_variables))
    w1, w2 = (model.get_layer(f"dense{i}").kernel.numpy().astype(np.float64) for i in (1, 2))
    norm1 = model.get_layer("norm1")
    gamma, beta = norm1.gamma.numpy(), norm1.beta.numpy()
    means1, vars1, means2, vars2 = [], [], [], []
    for step in range(3):
        x = np.asarray(batch_at(config, arrays, step)[0]).astype(np.float64)
        h1 = x @ w1
        means1.append(h1.mean(axis=0))
        vars1.append(h1.var(axis=0))  # biased, as Keras' moving statistics
        z1 = (h1 - h1.mean(axis=0)) / np.sqrt(h1.var(axis=0) + 1e-5) * gamma + beta  # no noise
        h2 = z1 @ w2
        means2.append(h2.mean(axis=0))
        vars2.append(h2.var(axis=0))
    expected = [np.mean(s, axis=0) for s in (means1, vars1, means2, vars2)]
    slots = statistic_slots(model)
    assert len(slots) == 4
    for slot, value in zip(slots, expected):
        np.testing.assert_allclose(np.asarray(non_trainable[slot]), value, rtol=1e-4, atol=1e-5)
    # Nothing changed: weights, moving statistics, seed states; the noise is back on.
    for a, b in zip(before, model.variables):
        np.testing.assert_array_equal(a, b.numpy())
    assert all(getattr(layer, "apply_noise", True) for layer in model.layers)
    assert norm1.momentum == 0.9


@pytest.mark.both_backends
def test_evaluation_changes_no_state_and_reports_both_statistics():
    config = load_config(SMOKE, ["model.norm=noisy_batch", "eval.bn_batches=2"])
    engine, model, optimizer, arrays = training_state(config)
    evaluate = make_evaluate(engine, config, model, make_dataset(config, "test", arrays=arrays),
                             arrays)
    before = [v.numpy().copy() for v in model.variables + optimizer.variables]
    first = evaluate()
    assert set(first) == {"test/loss", "test/accuracy", "test/moving_stats_loss",
                          "test/moving_stats_accuracy"}
    for a, b in zip(before, model.variables + optimizer.variables):
        np.testing.assert_array_equal(a, b.numpy())
    assert evaluate() == first
    # At initialization the moving statistics are (0, 1): far from the batch statistics.
    assert first["test/loss"] != first["test/moving_stats_loss"]
    moving = make_evaluate(engine, load_config(SMOKE, ["model.norm=noisy_batch",
                                                       "eval.bn_statistics=moving"]),
                           model, make_dataset(config, "test", arrays=arrays), arrays)()
    assert moving == {"test/loss": first["test/moving_stats_loss"],
                      "test/accuracy": first["test/moving_stats_accuracy"]}


def test_training_records_do_not_depend_on_the_evaluation_statistics(tmp_path):
    for name, statistics in (("recomputed", "recomputed"), ("moving", "moving")):
        train_and_evaluate(load_config(SMOKE, ["model.norm=noisy_batch",
                                               f"eval.bn_statistics={statistics}"]), tmp_path / name)
    recomputed, moving = (RunDirectory(tmp_path / n) for n in ("recomputed", "moving"))
    assert recomputed.records("train") == moving.records("train")
    for a, b in zip(recomputed.records("eval"), moving.records("eval")):
        assert a["test/moving_stats_accuracy"] == b["test/accuracy"]
        assert a["test/moving_stats_loss"] == b["test/loss"]
    # A network without BN-family layers has one kind of statistics only.
    train_and_evaluate(load_config(SMOKE, ["model.norm=none", "train.steps=6"]), tmp_path / "none")
    assert set(RunDirectory(tmp_path / "none").records("eval")[0]) == {"step", "test/loss",
                                                                      "test/accuracy"}
