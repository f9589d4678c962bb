"""Shared test helpers: small configs and deterministic TensorFlow."""

import numpy as np
import pytest

from pipeline.config import load_config


def make_config(*overrides):
    """A `Config` from the defaults plus `section.key=value` overrides."""
    return load_config(None, overrides)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
