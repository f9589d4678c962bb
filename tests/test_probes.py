"""Probes against closed forms, and their freedom from side effects (on both backends;
on JAX, that probing leaves every variable bit-identical stands for "training records
do not change", which the TensorFlow pass tests end to end)."""

import numpy as np
import pytest

from conftest import SMOKE, make_config, training_state
from pipeline.core.config import ConfigError, load_config
from pipeline.core.runs import RunDirectory
from pipeline.inputs.data import batch_at
from pipeline.nets.models import weight_layers
from pipeline.probes import make_probes
from pipeline.training.train import train_and_evaluate

ALL_PROBES = ["probes.landscape.enabled=true", "probes.ics.enabled=true",
              "probes.distributions.enabled=true", "probes.curvature.enabled=true",
              "probes.landscape.every=3", "probes.ics.every=3", "probes.distributions.every=3",
              "probes.curvature.every=3", "probes.ics.layers=[2,5]", "probes.landscape.multipliers=[1,2]",
              "probes.distributions.layers=[3,9]", "probes.curvature.iterations=5"]


def _setup(config):
    """(model, optimizer, arrays, probes by name)."""
    engine, model, optimizer, arrays = training_state(config)
    probes = lambda: {p.name: p for p in make_probes(config, engine, model, optimizer, arrays)}
    return model, optimizer, arrays, probes


def _linear_config(depth, *extra):
    return make_config("data.name=linear_regression", "model.family=dln", f"model.depth={depth}",
                       "model.norm=none", "data.regression_dim=4", "data.regression_train_size=32",
                       "data.batch_size=32", "optim.lr=0.01", "probes.landscape.enabled=true",
                       "probes.landscape.multipliers=[0.5,1,3]", "probes.curvature.enabled=true",
                       "probes.curvature.iterations=200", "probes.curvature.tolerance=0", *extra)


@pytest.mark.both_backends
def test_landscape_and_curvature_match_the_quadratic_closed_form():
    # One linear layer with the summed squared loss: L(W) = ||XW - Y||^2 is quadratic,
    # g = 2 X^T (XW - Y), H[V] = 2 X^T X V. Along theta - eta g: grad change = eta ||H g||,
    # beta = ||H g|| / ||g|| at every eta, top eigenvalue = 2 lambda_max(X^T X).
    config = _linear_config(1)
    model, optimizer, arrays, probes = _setup(config)
    landscape, curvature = probes()["landscape"], probes()["curvature"]
    x, y = (np.asarray(t).astype(np.float64) for t in batch_at(config, arrays, 0))
    w = weight_layers(model)[-1].kernel.numpy().astype(np.float64)
    g = 2 * x.T @ (x @ w - y)
    hg = 2 * x.T @ x @ g
    etas = np.array([0.5, 1, 3]) * config.optim.lr
    record = landscape(0)
    expected_losses = [np.sum((x @ (w - eta * g) - y) ** 2) for eta in etas]
    np.testing.assert_allclose(record["landscape/loss"], np.sum((x @ w - y) ** 2), rtol=1e-5)
    np.testing.assert_allclose(record["landscape/grad_norm"], np.linalg.norm(g), rtol=1e-5)
    per_eta = record["landscape/per_eta"]
    np.testing.assert_allclose([e["eta"] for e in per_eta], etas, rtol=1e-6)
    np.testing.assert_allclose([e["loss_at_eta"] for e in per_eta], expected_losses, rtol=1e-4)
    np.testing.assert_allclose([e["grad_change"] for e in per_eta], etas * np.linalg.norm(hg),
                               rtol=1e-4)
    np.testing.assert_allclose(record["landscape/beta_max"], np.linalg.norm(hg) / np.linalg.norm(g),
                               rtol=1e-4)
    # Each step size's multiplier of the LR is stored as given, beside eta; the gradient
    # there is g - eta H g, and the record's oscillation indicator is its cosine with g
    # at the grid point nearest the LR (multiplier 1).
    assert [e["multiplier"] for e in per_eta] == [0.5, 1.0, 3.0]
    moved = [g - eta * hg for eta in etas]
    cosines = [np.sum(m * g) / np.linalg.norm(m) / np.linalg.norm(g) for m in moved]
    np.testing.assert_allclose([e["cosine"] for e in per_eta], cosines, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(record["landscape/next_cosine"], cosines[1], rtol=1e-4, atol=1e-5)
    assert record["landscape/loss_max"] == max(e["loss_at_eta"] for e in per_eta)
    top = 2 * np.linalg.eigvalsh(x.T @ x).max()
    measured = curvature(0)
    np.testing.assert_allclose(measured["curvature/top_eigenvalue"], top, rtol=1e-3)
    np.testing.assert_allclose(measured["curvature/loss"], np.sum((x @ w - y) ** 2), rtol=1e-5)
    assert measured["curvature/residual"] < 1e-2


@pytest.mark.both_backends
def test_ics_matches_a_numpy_two_layer_linear_model_with_momentum():
    config = _linear_config(2, "optim.momentum=0.9", "probes.ics.enabled=true",
                            "probes.ics.layers=[1,2]", "probes.landscape.enabled=false",
                            "probes.curvature.enabled=false")
    model, optimizer, arrays, probes = _setup(config)
    rng = np.random.default_rng(1)
    # Give the momentum slots a history, so "the real update" differs from -lr * g.
    optimizer.apply_gradients([(rng.normal(size=v.shape).astype("float32"), v)
                               for v in model.trainable_variables])
    (ics,) = probes().values()
    x, y = (np.asarray(t).astype(np.float64) for t in batch_at(config, arrays, 0))
    w1, w2 = (v.numpy().astype(np.float64) for v in model.trainable_variables)
    m1 = optimizer.momentums[0].numpy().astype(np.float64)
    assert np.abs(m1).sum() > 0
    residual = x @ w1 @ w2 - y
    g1, g2 = 2 * x.T @ residual @ w2.T, 2 * (x @ w1).T @ residual
    w1_updated = w1 + (0.9 * m1 - config.optim.lr * g1)  # Keras SGD: m = 0.9 m - lr g; w += m
    g2_shifted = 2 * (x @ w1_updated).T @ (x @ w1_updated @ w2 - y)
    record = ics(0)
    np.testing.assert_allclose(record["ics/loss"], np.sum(residual ** 2), rtol=1e-5)
    first, second = record["ics/per_layer"]
    assert (first["layer"], second["layer"]) == (1, 2)
    l2 = np.linalg.norm(g2 - g2_shifted)
    np.testing.assert_allclose(second["l2"], l2, rtol=1e-3)
    np.testing.assert_allclose(second["relative_l2"], l2 / np.linalg.norm(g2), rtol=1e-3)
    cosine = np.sum(g2 * g2_shifted) / np.linalg.norm(g2) / np.linalg.norm(g2_shifted)
    np.testing.assert_allclose(second["cosine"], cosine, rtol=1e-4)
    # The oscillation indicator: the whole gradient before and after every variable's update.
    m2 = optimizer.momentums[1].numpy().astype(np.float64)
    w2_updated = w2 + (0.9 * m2 - config.optim.lr * g2)
    residual_next = x @ w1_updated @ w2_updated - y
    g_next = np.concatenate([(2 * x.T @ residual_next @ w2_updated.T).ravel(),
                             (2 * (x @ w1_updated).T @ residual_next).ravel()])
    g_now = np.concatenate([g1.ravel(), g2.ravel()])
    np.testing.assert_allclose(record["ics/next_cosine"], np.dot(g_now, g_next)
                               / np.linalg.norm(g_now) / np.linalg.norm(g_next), rtol=1e-4)
    # Nothing precedes layer 1, so its gradient cannot shift.
    assert first["l2"] == 0.0 and first["cosine"] == pytest.approx(1.0)


def _state(model, optimizer):
    return [v.numpy().copy() for v in model.variables + optimizer.variables]


@pytest.mark.both_backends
@pytest.mark.slow
def test_probes_leave_no_trace_and_repeat_exactly_on_noisy_bn():
    # A deep linear network with noisy BN holds every kind of state a probe could touch
    # (moving statistics, noise seed states, momentum slots, iterations), and XLA
    # compiles its probes in a fraction of the smoke VGG's time. The VGG's probes on
    # TensorFlow: test_training_with_every_probe_gives_the_same_training_records (end to
    # end); on JAX: the backend parity test (training continues after probing exactly as
    # on TensorFlow).
    config = _linear_config(5, "model.norm=noisy_batch", "optim.momentum=0.9", *ALL_PROBES,
                            "probes.ics.layers=[2,4]", "probes.distributions.layers=[1,5]")
    model, optimizer, arrays, make = _setup(config)
    optimizer.apply_gradients([(np.ones(v.shape, "float32"), v) for v in model.trainable_variables])
    before = _state(model, optimizer)
    probes = list(make().values())
    assert len(probes) == 4
    first = [probe(3) for probe in probes]
    after = _state(model, optimizer)
    assert len(before) == len(after)
    for a, b in zip(before, after):  # weights, moving stats, seed states, iterations, slots
        np.testing.assert_array_equal(a, b)
    # In the other order: a probe that left state another one reads would change it.
    assert [probe(3) for probe in reversed(probes)][::-1] == first


def _numbers(value):
    """Every number in a record value (entries of per_layer / per_eta included)."""
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return [] if isinstance(value, str) else [value]  # a layer's name is no number


def test_schedules_are_dense_early_and_regular_later():
    from pipeline.core.probe_settings import ScheduleConfig
    from pipeline.probes.schedule import Schedule, schedule_steps
    log = ScheduleConfig(every=50, schedule="log", per_decade=4)
    # 10^(k/4) rounded: 1, 2, 3, 6, 10, 18, 32, 56, 100, 178 ...; with every 50: 0, 50, ...
    assert schedule_steps(log, 200) == [0, 1, 2, 3, 6, 10, 18, 32, 50, 56, 100, 150, 178]
    assert schedule_steps(ScheduleConfig(every=50), 200) == [0, 50, 100, 150]
    schedule = Schedule([0, 3, 10])
    assert schedule.due(3) and not schedule.due(4)
    assert schedule.next_after(3) == 10 and schedule.next_after(10) is None


@pytest.mark.slow
def test_training_with_every_probe_gives_the_same_training_records(tmp_path):
    with_probes = load_config(SMOKE, ["model.norm=noisy_batch", *ALL_PROBES,
                                      "probes.landscape.schedule=log"])
    from pipeline.probes import make_probes as factory
    train_and_evaluate(with_probes, tmp_path / "probed", probes_factory=factory)
    train_and_evaluate(load_config(SMOKE, ["model.norm=noisy_batch"]), tmp_path / "plain")
    probed, plain = RunDirectory(tmp_path / "probed"), RunDirectory(tmp_path / "plain")
    assert probed.records("train") == plain.records("train")
    assert probed.records("eval") == plain.records("eval")
    log_steps = [0, 1, 2, 3, 4, 5, 6, 8, 9, 10]  # 10 a decade below 12, and every 3
    for stream in ("landscape", "ics", "distributions", "curvature"):
        records = probed.records(stream)
        expected = log_steps if stream == "landscape" else [0, 3, 6, 9]
        assert [r["step"] for r in records] == expected, stream
        assert all(np.isfinite(_numbers(r)).all() for r in records), stream
    assert probed.read_meta().probe_steps["landscape"] == log_steps
    [layer3] = [e for e in probed.records("distributions")[0]["distributions/per_layer"]
                if e["layer"] == 3]
    assert len(layer3["sample"]) == 256


@pytest.mark.both_backends
def test_out_of_range_layers_fail_with_the_valid_range():
    config = load_config(SMOKE, ["probes.ics.enabled=true", "probes.ics.layers=[10]"])
    _, _, _, probes = _setup(config)
    with pytest.raises(ConfigError, match=r"\[10\] out of range; this vgg model has 9 weight layers \(layers with a "
                       r"kernel\), numbered 1..9"):
        probes()


@pytest.mark.both_backends
def test_hessian_vector_products_through_batchnorm_match_finite_differences():
    # Hv = (g(theta + h v) - g(theta - h v)) / 2h for a unit v, on a BN DLN (smooth, so a
    # large h is fine). Keras' TensorFlow BN stops the gradient through the mean inside
    # the variance, which leaves first derivatives exact but Hv ~5 % off here.
    config = _linear_config(3, "model.norm=batch")
    _, _, _, probes = _setup(config)
    curvature = probes()["curvature"]
    objective = curvature.objective
    x, y = curvature.batches(0)
    trainable, non_trainable = objective.values()
    rng = np.random.default_rng(1)
    v = [rng.normal(size=w.shape) for w in trainable]
    length = np.sqrt(sum(np.sum(a ** 2) for a in v))
    v = [(a / length).astype("float32") for a in v]
    product = objective.engine.compile(objective.hessian_vector_product)(
        trainable, non_trainable, x, y, v)
    step = 1e-3

    def gradients(sign):
        moved = [w + sign * step * d for w, d in zip(trainable, v)]
        return curvature.objective.loss_and_grads(moved, non_trainable, x, y)[1]
    flat = lambda tensors: np.concatenate([np.asarray(t).astype(np.float64).ravel() for t in tensors])
    difference = (flat(gradients(1)) - flat(gradients(-1))) / (2 * step)
    assert np.linalg.norm(flat(product) - difference) / np.linalg.norm(difference) < 1e-3


def test_curvature_matches_a_dense_eigendecomposition_of_a_two_layer_hessian():
    # L(W1, W2) = ||X W1 W2 - Y||^2 is not quadratic: its Hessian, built here in float64
    # by central differences of the closed-form gradient, has its eigenvalue of largest
    # magnitude where the probe's Lanczos iteration, stopped by its tolerance, finds it.
    config = _linear_config(2, "probes.curvature.tolerance=1e-6")
    model, optimizer, arrays, probes = _setup(config)
    x, y = (np.asarray(t).astype(np.float64) for t in batch_at(config, arrays, 0))
    w1, w2 = (layer.kernel.numpy().astype(np.float64) for layer in weight_layers(model))

    def gradient(theta):
        a, b = theta[:16].reshape(4, 4), theta[16:].reshape(4, 4)
        residual = x @ a @ b - y
        return np.concatenate([(2 * x.T @ residual @ b.T).ravel(), (2 * (x @ a).T @ residual).ravel()])
    theta, step = np.concatenate([w1.ravel(), w2.ravel()]), 1e-5
    hessian = np.stack([(gradient(theta + step * e) - gradient(theta - step * e)) / (2 * step)
                        for e in np.eye(len(theta))])
    eigenvalues = np.linalg.eigvalsh((hessian + hessian.T) / 2)
    top = eigenvalues[np.argmax(np.abs(eigenvalues))]
    record = probes()["curvature"](0)
    np.testing.assert_allclose(record["curvature/top_eigenvalue"], top, rtol=1e-3)
    assert 2 <= record["curvature/iterations"] < 200  # stopped by the tolerance
    # A loose tolerance stops sooner, with a looser estimate.
    loose = _setup(_linear_config(2, "probes.curvature.tolerance=0.05"))[3]()["curvature"](0)
    assert loose["curvature/iterations"] < record["curvature/iterations"]


def test_curvature_finds_the_top_eigenvalue_beside_an_almost_as_large_negative_one():
    # H with eigenvalues 3 and -2.97 (the rest in [-1, 1]), as a BN network's can be at
    # initialization: power iteration converges there by 0.99 a product (hundreds of
    # products for 1e-4); the Lanczos iteration separates both ends in a few.
    from keras import ops
    config = _linear_config(2, "probes.curvature.tolerance=1e-6")
    probe = _setup(config)[3]()["curvature"]
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(32, 32)))[0]
    spectrum = np.concatenate([[3.0, -2.97], np.linspace(-1, 1, 30)])
    matrix = ops.convert_to_tensor((basis * spectrum) @ basis.T, "float32")

    class FixedHessian:  # the probe's objective, with H v = matrix @ v
        def __init__(self, objective):
            self.loss, self.values = objective.loss, objective.values

        def hessian_vector_product(self, trainable, non_trainable, x, y, vector):
            product = ops.matmul(matrix, ops.concatenate([ops.reshape(v, (-1,)) for v in vector]))
            return [ops.reshape(product[16 * k:16 * (k + 1)], (4, 4)) for k in range(2)]
    probe.objective = FixedHessian(probe.objective)
    record = probe(0)
    np.testing.assert_allclose(record["curvature/top_eigenvalue"], 3.0, rtol=1e-4)
    assert record["curvature/iterations"] <= 25 and record["curvature/residual"] < 1e-2
