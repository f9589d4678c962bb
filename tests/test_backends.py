"""The two engines against each other: the backend choice, the same weights and batches
giving the same losses and probe values on TensorFlow and JAX, checkpoints that cross
backends, and JAX's data parallelism over two (forced host) devices."""

import numpy as np
import pytest

from conftest import REPO, SMOKE, call_cli, clean_environment, flatten, run_cli, training_state
from pipeline.core.backend import BackendError, choose_backend, select_backend
from pipeline.core.config import load_config
from pipeline.core.fingerprint import checkpoint_identity
from pipeline.core.runs import RunDirectory
from pipeline.training.checkpoint import restore_latest, save_checkpoint

DLN = REPO / "configs" / "dln.yaml"

PROBES = ["probes.landscape.enabled=true", "probes.ics.enabled=true",
          "probes.distributions.enabled=true", "probes.curvature.enabled=true",
          "probes.landscape.every=10", "probes.ics.every=10", "probes.distributions.every=10",
          "probes.curvature.every=10", "probes.curvature.iterations=5"]


@pytest.mark.both_backends
def test_the_backend_is_the_flag_then_keras_backend_then_jax_on_a_tpu(monkeypatch):
    for variable in ("KERAS_BACKEND", "TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE"):
        monkeypatch.delenv(variable, raising=False)
    assert choose_backend() == "tensorflow"
    monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v5litepod-8")
    assert choose_backend() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert choose_backend() == "tensorflow"
    assert choose_backend("jax") == "jax"
    with pytest.raises(BackendError, match="'torch' is not supported; choose one of tensorflow, jax"):
        choose_backend("torch")


@pytest.mark.both_backends
def test_a_second_backend_in_one_process_is_refused_with_what_to_do():
    import keras
    other = "jax" if keras.backend.backend() == "tensorflow" else "tensorflow"
    with pytest.raises(BackendError, match=f"start a new process with KERAS_BACKEND={other}"):
        select_backend(other)
    assert select_backend(keras.backend.backend()) == keras.backend.backend()


# The JAX run compiled without LLVM's optimizations: the same XLA programs, ~30 % less
# CPU to compile them (the VGG's from 38 to 26 s), and this test compares within float32
# rounding (~1e-7 apart from the optimized programs' values), not to the bit. Byte-exact
# records (resumes, seeds, probes) are tested on the programs users run.
QUICK_TO_COMPILE = {"XLA_FLAGS": "--xla_backend_optimization_level=0"}


def _overrides(items):
    """`--set` flags for `items`."""
    return [flag for item in items for flag in ("--set", item)]


def _start_from_the_same_checkpoint(config, folders):
    """Write step-0 weights (built on this process's backend) into each run folder."""
    engine, model, optimizer, _ = training_state(config)
    for folder in folders:
        save_checkpoint(RunDirectory(folder).checkpoint_dir, 0, model, optimizer,
                        checkpoint_identity(config))
    return model, optimizer


def _values(records, prefix):
    return {k: v for r in records for k, v in flatten(r).items()
            if k.startswith(prefix) and k != "step" and not isinstance(v, str)}  # numbers


@pytest.mark.parametrize("variant", [
    # 7 steps only: the smoke VGG's losses agree to ~3e-6 for 7 steps, then the 1e-7
    # rounding differences of the two backends' kernels grow ~5x per step and pass 1e-4
    # (at LR 0.05, 0.01 and 0.002, with 4x the data and 2x the width alike), as small
    # differences do in a network of ReLUs and max-pools with 4 channels. (Since JAX
    # runs its steps inside one compiled loop, XLA rounds its step a little differently:
    # the losses differ by 4e-4 at step 8, where they passed 1e-4 only after step 10.)
    # Without the curvature probe, the costliest of the four for XLA to compile:
    # its Hessian-vector products through BN are checked against finite differences on
    # both backends (tests/test_probes.py), and the DLN below compares it across them.
    ["model.norm=batch", "optim.lr=0.01", "train.steps=7", "train.log_every=1",
     "train.eval_every=4", "train.checkpoint_every=4", "probes.landscape.every=4",
     "probes.ics.every=4", "probes.distributions.every=4", "probes.curvature.enabled=false"],
    ["data.name=linear_regression", "model.family=dln", "model.norm=batch", "model.depth=6",
     "data.regression_dim=4", "data.regression_train_size=64", "data.regression_test_size=32",
     "data.batch_size=32", "data.eval_batch_size=32", "optim.lr=1e-3",
     "probes.ics.layers=[2,4]", "probes.distributions.layers=[1,5]",
     "train.steps=20", "train.log_every=1", "train.eval_every=10", "train.checkpoint_every=10"],
], ids=["vgg_bn", "dln_bn"])
@pytest.mark.slow
def test_same_weights_and_batches_give_the_same_losses_and_probes_on_both_backends(variant,
                                                                                     tmp_path):
    import keras
    if keras.backend.backend() != "tensorflow":
        pytest.skip("drives both backends from the TensorFlow run of the suite")
    overrides = [*PROBES, *variant]
    config = load_config(SMOKE, overrides)
    steps = config.train.steps
    folders = {backend: tmp_path / backend for backend in ("tensorflow", "jax")}
    _start_from_the_same_checkpoint(config, folders.values())
    # TensorFlow's run in this process (the suite's TensorFlow pass), JAX's in its own.
    call_cli("--backend", "tensorflow", "train", SMOKE, *_overrides(overrides),
             "--workdir", folders["tensorflow"])
    run_cli("--backend", "jax", "train", SMOKE, *_overrides(overrides),
            "--workdir", folders["jax"], timeout=600, env=QUICK_TO_COMPILE)
    runs = {backend: RunDirectory(folder) for backend, folder in folders.items()}
    assert runs["jax"].read_meta().backend == "jax"
    assert runs["jax"].read_meta().start_step == 0  # it started from the shared weights
    tf_losses, jax_losses = ([r["train/loss"] for r in runs[b].records("train")] for b in folders)
    assert len(tf_losses) == len(jax_losses) == steps
    np.testing.assert_allclose(jax_losses, tf_losses, rtol=1e-4)
    probed = [name for name in ("landscape", "ics", "curvature", "distributions")
              if getattr(config.probes, name).enabled]
    for stream in (*probed, "eval"):
        tf_values, jax_values = (_values(runs[b].records(stream), stream.replace("eval", "test"))
                                 for b in folders)
        assert tf_values and tf_values.keys() == jax_values.keys(), stream
        for key in tf_values:
            if key.endswith(("sample", "residual")):
                continue  # raw samples compare below via quantiles; a residual is ~0 / ~0
            # A normalized channel's mean is ~0 on the unit scale of its std: compare it
            # at that scale (the backends' float32 rounding differs by ~3e-6 there).
            atol = 1e-5 if key.endswith("channel_mean") else 1e-6
            np.testing.assert_allclose(jax_values[key], tf_values[key], rtol=1e-3, atol=atol,
                                       err_msg=key)
    # And back: JAX's last checkpoint loads into this TensorFlow model, by variable path.
    _, model, optimizer, _ = training_state(config)
    assert restore_latest(runs["jax"].checkpoint_dir, model, optimizer,
                          checkpoint_identity(config)) == steps
    with np.load(runs["jax"].checkpoint_dir / f"ckpt-{steps:08d}.npz") as saved:
        for variable in model.variables + optimizer.variables:
            np.testing.assert_array_equal(variable.numpy(), saved[variable.path], variable.path)
    assert int(optimizer.iterations.numpy()) == steps


# XLA:CPU runs the two devices' programs and their intra-op (Eigen) work on one thread
# pool sized by the cores. On 2 cores shared with a second test worker, a device that
# reached the all-reduce could wait behind the other's queued intra-op tasks past the
# rendezvous timeout (40 s), and XLA aborted. Single-threaded Eigen gives each device's
# program its own thread, and the timeout is raised for a loaded machine.
TWO_HOST_DEVICES = ("--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=false "
                    "--xla_cpu_collective_timeout_seconds=600")


@pytest.mark.slow
def test_jax_data_parallel_on_two_devices_matches_one_device(tmp_path):
    import json
    import subprocess
    import sys
    env = {**clean_environment(), "KERAS_BACKEND": "jax",
           "XLA_FLAGS": f"{TWO_HOST_DEVICES} {QUICK_TO_COMPILE['XLA_FLAGS']}"}
    # A BN deep linear network: what is tested (one program over the global batch, BN
    # statistics of the global batch) does not depend on the layers, and XLA compiles
    # it in a fraction of the smoke VGG's time, once per device count.
    common = ["model.norm=batch", "model.depth=6", "data.regression_train_size=64",
              "data.regression_test_size=32", "data.batch_size=32", "data.eval_batch_size=32",
              "train.steps=6", "train.log_every=1", "train.eval_every=3", "train.progress=false"]
    # Both runs in one JAX process (the default strategy uses its first device only).
    # sync_batch_norm asks for what JAX does anyway; it is accepted, not refused.
    commands = [["train", str(DLN), *_overrides([*common, f"train.strategy={strategy}",
                                                 f"model.sync_batch_norm={name == 'two'}"]),
                 "--workdir", str(tmp_path / name)]
                for name, strategy in (("one", "default"), ("two", "mirrored"))]
    script = ("import json, sys\nfrom pipeline.__main__ import main\n"
              "sys.exit(max(main(argv) for argv in json.loads(sys.argv[1])))")
    result = subprocess.run([sys.executable, "-c", script, json.dumps(commands)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = RunDirectory(tmp_path / "one"), RunDirectory(tmp_path / "two")
    assert two.read_meta().replicas == 2 and two.read_meta().strategy == "DataParallel"
    assert one.read_meta().replicas == 1
    # One program over the global batch either way: BN statistics are the global batch's.
    for stream, key in (("train", "train/loss"), ("eval", "test/loss")):
        np.testing.assert_allclose([r[key] for r in two.records(stream)],
                                   [r[key] for r in one.records(stream)], rtol=1e-5)
