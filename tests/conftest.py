"""Shared test helpers: small configs and deterministic TensorFlow.

Tests marked `both_backends` run a second time on JAX: `make test` runs them again in a
process with KERAS_BACKEND=jax (Keras picks its backend once per process). Tests marked
`backend_free` (they train nothing) run once, in that process, which has CPU to spare."""

import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest

from pipeline.core.config import load_config

# Each test process (each xdist worker) writes its temporary files, TensorFlow's
# autograph files and tensorflow-datasets' mock folders among them, into a folder of its
# own, removed when it exits: the suite leaves nothing in the system's temporary folder.
# Set before TensorFlow starts; the processes tests start inherit it through TMPDIR.
# pytest's own folders (tmp_path, kept for the last 3 runs) stay where pytest puts them.
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
_OWN_TEMPORARY = tempfile.mkdtemp(prefix="bnlab-tests-")
os.environ["TMPDIR"] = tempfile.tempdir = _OWN_TEMPORARY
atexit.register(shutil.rmtree, _OWN_TEMPORARY, ignore_errors=True)


def pytest_configure(config):
    """The frameworks start as a command starts them: quietly (their start-up logging
    would otherwise follow the test report), before the test modules are collected. A
    run fixes TensorFlow's intra-op threads before TensorFlow starts (train.threads: 1 on
    a CPU); tests that use TensorFlow before their first run need the same count. Not in
    the process that hands tests to xdist's workers (`-n`): it runs none, and starting
    TensorFlow there cost ~6 s of CPU while the workers start theirs."""
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
        return
    __import__("pipeline.core.backend").core.backend.start_frameworks()
    __import__("tensorflow").config.threading.set_intra_op_parallelism_threads(1)


def pytest_collection_modifyitems(items):
    """Tests marked `slow` first, otherwise in collection order: xdist's workers, each
    handed one test at a time (Makefile), then end on short tests, rather than one long
    test keeping a core busy after the other worker has run out of tests."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def make_config(*overrides):
    """A `Config` from the defaults on synthetic data plus `section.key=value` overrides."""
    return load_config(None, ("data.name=synthetic",) + overrides)


@pytest.fixture(autouse=True)
def programs_reused_only_within_the_test():
    """A test that turns on the JAX engine's reuse of programs (`reuse_programs()`, as a
    sweep's worker does) leaves it as it found it."""
    from pipeline import engines
    engine = engines.module("engine") if engines.backend_in_use() == "jax" else None
    reuse = engine and engine._REUSE
    yield
    if engine:
        engine._REUSE = reuse


@pytest.fixture(autouse=True)
def float32_policy():
    """A test that trains in mixed precision must not leave the global policy behind."""
    yield
    import keras
    keras.mixed_precision.set_dtype_policy("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


REPO = __import__("pathlib").Path(__file__).resolve().parent.parent
SMOKE = REPO / "configs" / "smoke.yaml"


def flatten(record):
    """A record with its per_layer / per_eta entries spread out ("ics/per_layer[1].l2"),
    for comparing two runs' records value by value."""
    flat = {}
    for key, value in record.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            for index, entry in enumerate(value):
                flat.update({f"{key}[{index}].{field}": v for field, v in entry.items()})
        else:
            flat[key] = value
    return flat


def clean_environment():
    """This process's environment as a user's shell has it: without the
    TF_CPP_MIN_LOG_LEVEL that importing JAX sets here (a command reads a set one as the
    user's wish to see TensorFlow's logging)."""
    import os
    from pipeline.core.console import OWN_LEVEL
    return {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", OWN_LEVEL)}


def run_cli(*args, env=None, timeout=300, check=True):
    """Run `python -m pipeline ARGS` in a subprocess; returns the CompletedProcess."""
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], cwd=REPO,
                            env={**clean_environment(), **(env or {})}, capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}")
    return result


def call_cli(*args, check=True):
    """`python -m pipeline ARGS` run in this process, from the repository (for commands
    that print and stop before training: they need no process of their own); returns a
    CompletedProcess. The signal handlers the CLI installs are restored afterwards."""
    import contextlib
    import io
    import os
    import signal
    import subprocess
    from pipeline.__main__ import main
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    out, err, cwd = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        os.chdir(REPO)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    finally:
        os.chdir(cwd)
        for number, handler in handlers.items():
            signal.signal(number, handler)
    result = subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"exit {code}\n{result.stdout}\n{result.stderr[-3000:]}")
    return result


def training_state(config):
    """(engine, model, optimizer, arrays) of `config`, as a run starts."""
    from pipeline.inputs.data import load_arrays
    from pipeline.engines import make_engine
    from pipeline.training.runtime import configure_runtime
    from pipeline.training.train import build_training_state
    engine = make_engine(config, configure_runtime(config))
    arrays = load_arrays(config.data)
    model, optimizer = build_training_state(config, arrays, engine)
    return engine, model, optimizer, arrays


def fake_run(path, *overrides):
    """A finished 8-step run directory as training writes it (resolved config of SMOKE
    with `overrides`, meta.json, train and eval records), without training."""
    import json
    from pipeline.core.config import load_config, to_yaml
    (path / "records").mkdir(parents=True)
    (path / "config.yaml").write_text(to_yaml(load_config(SMOKE, list(overrides))))
    (path / "meta.json").write_text(json.dumps({"status": "finished", "step": 8, "steps": 8}))
    lines = [json.dumps({"step": step, "train/loss": 2.0 / (step + 1), "train/accuracy": 0.1 * step})
             for step in range(9)]
    (path / "records" / "train.jsonl").write_text("\n".join(lines) + "\n")
    (path / "records" / "eval.jsonl").write_text("".join(  # every 6 steps (SMOKE) and the last
        json.dumps({"step": step, "test/loss": 0.5, "test/accuracy": 0.8}) + "\n"
        for step in (6, 8)))
    return path


def fails_cleanly(result, code, *phrases):
    """An expected failure: exit `code`, no traceback, each phrase in the message."""
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr[-2000:]


@pytest.fixture
def interrupts_installed():
    """The CLI's signal handling in this test process; the handlers and what they
    received are restored afterwards."""
    import signal

    from pipeline.core import interrupts
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        interrupts.install()
        yield interrupts
    finally:
        interrupts._received.clear()
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])
