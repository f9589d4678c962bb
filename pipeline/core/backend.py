"""Which Keras backend a process runs on: `--backend`, else `KERAS_BACKEND`, else JAX
when a TPU is present (TensorFlow no longer runs on Colab's TPU runtimes) and
TensorFlow otherwise (the faster one on CPUs and the one with multi-worker support).

Keras reads `KERAS_BACKEND` once, when it is first imported, so the choice has to be
made before anything imports Keras: this module imports neither Keras nor TensorFlow.
"""

import os
import sys

from pipeline.core.errors import InputError

BACKENDS = ("tensorflow", "jax")


class BackendError(InputError):
    """A backend that cannot be used in this process."""


def tpu_present():
    """True on Colab TPU runtimes and Cloud TPU VMs (they announce themselves in the
    environment)."""
    return any(os.environ.get(k) for k in ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE"))


def choose_backend(requested=None):
    """The backend to use: `requested`, else `KERAS_BACKEND`, else the machine's default."""
    backend = requested or os.environ.get("KERAS_BACKEND") or (
        "jax" if tpu_present() else "tensorflow")
    if backend not in BACKENDS:
        raise BackendError(f"backend {backend!r} is not supported; choose one of "
                           f"{', '.join(BACKENDS)} (--backend or KERAS_BACKEND)")
    return backend


def select_backend(requested=None):
    """Make the chosen backend Keras' backend for this process; returns its name.
    Refused when Keras was already imported with another one."""
    backend = choose_backend(requested)
    if "keras" in sys.modules:
        import keras
        if keras.backend.backend() != backend:
            raise BackendError(
                f"Keras already runs on {keras.backend.backend()} in this process; start a new "
                f"process with KERAS_BACKEND={backend} (or --backend {backend})")
        return backend
    os.environ["KERAS_BACKEND"] = backend
    return backend


def start_frameworks(verbose=False):
    """Import Keras (on the backend chosen before) and TensorFlow (every command uses
    tf.data or its error types) and let them find their devices, quietly (see
    `pipeline.core.console.quiet_startup`). Later imports and device look-ups reuse what
    this did."""
    from pipeline.core.console import quiet_startup
    with quiet_startup(verbose):
        import keras
        import tensorflow as tf
        tf.config.list_physical_devices()
        if keras.backend.backend() == "jax":
            import jax
            jax.devices()
