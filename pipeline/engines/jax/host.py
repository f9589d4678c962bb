"""JAX's process settings. Every step is an XLA program (`xla` is always on) and XLA's
CPU programs are deterministic; XLA sizes its own CPU thread pool when JAX starts.
TensorFlow still runs the input pipeline (tf.data, on the host), so its op
determinism is set too, and it is kept off the GPUs JAX uses."""

import jax
import tensorflow as tf

from pipeline.core.config import AUTO
from pipeline.engines.tensorflow import host as tensorflow_host

set_op_determinism = tensorflow_host.set_op_determinism


def accelerator():
    return jax.default_backend()  # "cpu", "gpu" or "tpu"


def resolve(train, on_cpu, recorded):
    """(xla, deterministic, threads): see the module docstring. Threads 0: XLA sizes its
    pool when JAX starts, so the one-thread rule reaches it as flags in the process's
    environment (pipeline.core.threads.xla_flags, set by the sweeps)."""
    deterministic = on_cpu if train.deterministic == AUTO else train.deterministic
    return True, deterministic, 0


def configure(runtime):
    set_op_determinism(runtime.deterministic)
    if tf.config.list_physical_devices("GPU"):
        # Possible only before TensorFlow's runtime starts, i.e. once per process.
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            pass


def versions():
    return {"tensorflow": tf.__version__, "jax": jax.__version__}
