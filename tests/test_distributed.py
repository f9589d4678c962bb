"""Distribution: 2 replicas (MirroredStrategy on 2 logical CPUs) and 2 worker processes
(MultiWorkerMirroredStrategy on 127.0.0.1) train like one device."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, SMOKE, call_cli, flatten
from pipeline.core.runs import RunDirectory

# Synchronized BN makes the replicas' batch statistics those of the global batch.
COMMON = ["--set", "model.sync_batch_norm=true", "--set", "train.steps=6",
          "--set", "train.eval_every=3", "--set", "train.log_every=1"]

TWO_LOGICAL_CPUS = """
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pipeline.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def _losses(workdir, stream="train", key="train/loss"):
    return np.array([r[key] for r in RunDirectory(workdir).records(stream)])


def _assert_same_training(a, b):
    # Summation order differs across replicas: equal up to float32 rounding.
    np.testing.assert_allclose(_losses(a), _losses(b), rtol=2e-5)
    np.testing.assert_allclose(_losses(a, "eval", "test/loss"), _losses(b, "eval", "test/loss"),
                               rtol=2e-5)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_worker_processes_match_one_worker(tmp_path):
    call_cli("train", SMOKE, *COMMON, "--workdir", tmp_path / "single")  # one worker, in-process
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "pipeline", "train", str(SMOKE), *COMMON,
             "--workdir", str(tmp_path / "multi")], cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [p.communicate(timeout=300)[0] for p in processes]
    finally:  # a hung worker must not outlive the test
        for p in processes:
            p.kill()
    assert all(p.returncode == 0 for p in processes), outputs[0][-2000:] + outputs[1][-2000:]
    meta = RunDirectory(tmp_path / "multi").read_meta()
    assert meta.strategy == "MultiWorkerMirroredStrategy" and meta.replicas == 2
    _assert_same_training(tmp_path / "single", tmp_path / "multi")


@pytest.mark.slow
def test_mirrored_strategy_on_two_replicas_matches_one_device_with_every_probe(tmp_path):
    # One pair of runs for training and probes: probing changes no training record
    # (tests/test_probes.py), so the probes cost the comparison nothing.
    probes = []
    for item in ["probes.landscape.enabled=true", "probes.ics.enabled=true",
                 "probes.ics.layers=[2,5]", "probes.distributions.enabled=true",
                 "probes.distributions.layers=[3,9]", "probes.curvature.enabled=true",
                 "probes.curvature.iterations=5", "probes.landscape.every=3", "probes.ics.every=3",
                 "probes.distributions.every=3", "probes.curvature.every=3"]:
        probes += ["--set", item]
    call_cli("train", SMOKE, *COMMON, *probes, "--workdir", tmp_path / "one")  # in-process
    subprocess.run([sys.executable, "-c", TWO_LOGICAL_CPUS, "train", str(SMOKE), *COMMON, *probes,
                    "--set", "train.strategy=mirrored", "--workdir", str(tmp_path / "two")],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
    meta = RunDirectory(tmp_path / "two").read_meta()
    assert meta.strategy == "MirroredStrategy" and meta.replicas == 2
    _assert_same_training(tmp_path / "one", tmp_path / "two")
    for stream in ("landscape", "ics", "distributions", "curvature"):
        one, two = (RunDirectory(tmp_path / n).records(stream) for n in ("one", "two"))
        assert len(one) == len(two) == 2, stream
        for a, b in zip(map(flatten, one), map(flatten, two)):
            assert a.keys() == b.keys()
            for key in a:
                if isinstance(a[key], str):  # a layer's name
                    assert a[key] == b[key], key
                    continue
                np.testing.assert_allclose(a[key], b[key], rtol=1e-3, atol=1e-5, err_msg=key)
