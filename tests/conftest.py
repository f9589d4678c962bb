"""Shared test helpers: small configs and deterministic TensorFlow."""

import numpy as np
import pytest

from pipeline.config import load_config


def make_config(*overrides):
    """A `Config` from the defaults on synthetic data plus `section.key=value` overrides."""
    return load_config(None, ("data.name=synthetic",) + overrides)


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


def run_cli(*args, env=None, timeout=300, check=True):
    """Run `python -m pipeline ARGS` in a subprocess; returns the CompletedProcess."""
    import os
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], cwd=REPO,
                            env={**os.environ, **(env or {})}, capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}")
    return result
