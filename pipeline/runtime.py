"""Process-wide settings a run depends on: backend, seeds, op determinism, XLA, mixed
precision.

`train.xla` and `train.deterministic` may be `auto`, resolved here for the machine the
run starts on: bit-exact on a CPU (op determinism on, XLA off, which is also the faster
setting there), speed first on a GPU or TPU (XLA on, op determinism off) unless the
config asks for determinism. On the JAX backend every step is an XLA program
(`xla` is always on) and XLA's CPU programs are deterministic. The resolved choices go
into meta.json.
"""

import dataclasses

import keras
import tensorflow as tf

from pipeline.config import AUTO
from pipeline.strategy import accelerator_kind


@dataclasses.dataclass(frozen=True)
class Runtime:
    accelerator: str     # "cpu", "gpu" or "tpu"
    xla: bool            # the train step is compiled with XLA
    deterministic: bool  # TensorFlow op determinism (JAX: XLA's own, on the CPU)
    backend: str = "tensorflow"  # Keras' backend: "tensorflow" or "jax"


def _jax_accelerator():
    import jax
    return jax.default_backend()  # "cpu", "gpu" or "tpu"


def resolve_runtime(train, accelerator=None, backend=None):
    """The `Runtime` that `train` (a `TrainConfig`) asks for on `accelerator` with
    `backend` (both detected when None)."""
    backend = backend or keras.backend.backend()
    if backend == "jax":
        accelerator = accelerator or _jax_accelerator()
        deterministic = accelerator == "cpu" if train.deterministic == AUTO else train.deterministic
        return Runtime(accelerator, True, deterministic, backend)
    accelerator = accelerator or accelerator_kind()
    on_cpu = accelerator == "cpu"
    # XLA has no deterministic max-pool gradient, so an explicit xla=true rules it out.
    deterministic = train.deterministic if train.deterministic != AUTO else (
        on_cpu and train.xla is not True)
    xla = train.xla if train.xla != AUTO else (not on_cpu and not deterministic)
    return Runtime(accelerator, xla, deterministic, backend)


def configure_runtime(config):
    """Set the process-global state a run depends on; call before building anything.
    Returns the resolved `Runtime`."""
    runtime = resolve_runtime(config.train)
    keras.backend.clear_session()  # a fresh graph and fresh layer names for each run
    keras.utils.set_random_seed(config.seed)
    # Op determinism is process-global, so an earlier run in this process may have set it;
    # TensorFlow exports only the switch on, the switch off lives in its config module.
    if runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        from tensorflow.python.framework import config as tf_config
        tf_config.disable_op_determinism()
    keras.mixed_precision.set_dtype_policy(config.train.precision)
    if runtime.backend == "jax" and tf.config.list_physical_devices("GPU"):
        # TensorFlow only feeds the data (tf.data, on the host): keep it off the GPUs JAX
        # uses. Possible only before TensorFlow's runtime starts, i.e. once per process.
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            pass
    return runtime
