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
    threads: int = 0     # intra-op threads; 0 = the framework's default


def _jax_accelerator():
    import jax
    return jax.default_backend()  # "cpu", "gpu" or "tpu"


def resolve_runtime(train, accelerator=None, backend=None, recorded=None):
    """The `Runtime` that `train` (a `TrainConfig`) asks for on `accelerator` with
    `backend` (both detected when None). `recorded`: the runtime a resumed run recorded
    in meta.json; its thread count is kept where `train.threads` is auto."""
    backend = backend or keras.backend.backend()
    if backend == "jax":
        accelerator = accelerator or _jax_accelerator()
    else:
        accelerator = accelerator or accelerator_kind()
    on_cpu = accelerator == "cpu"
    if backend == "jax":
        # XLA sizes its own CPU thread pool when JAX starts; train.threads is TensorFlow's.
        deterministic = on_cpu if train.deterministic == AUTO else train.deterministic
        return Runtime(accelerator, True, deterministic, backend, 0)
    # One thread per run on a CPU: the same numerics however the run is launched.
    threads = train.threads if train.threads != AUTO else int(on_cpu)
    if train.threads == AUTO and (recorded or {}).get("backend") == backend and (
            "threads" in recorded):
        threads = recorded["threads"]
    # XLA has no deterministic max-pool gradient, so an explicit xla=true rules it out.
    deterministic = train.deterministic if train.deterministic != AUTO else (
        on_cpu and train.xla is not True)
    xla = train.xla if train.xla != AUTO else (not on_cpu and not deterministic)
    return Runtime(accelerator, xla, deterministic, backend, threads)


class ThreadsError(RuntimeError):
    """The process already computes with another thread count than the run's."""


def _set_threads(threads):
    """Set TensorFlow's intra-op threads (its runtime fixes them once it starts); a
    process that already runs with another count cannot take this run."""
    current = tf.config.threading.get_intra_op_parallelism_threads()
    if current == threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:
        raise ThreadsError(
            f"this process already computes with {current or 'the default'} intra-op "
            f"thread(s) and the run asks for {threads or 'the default'} (train.threads); "
            "start it in a new process") from None


def configure_runtime(config, recorded=None):
    """Set the process-global state a run depends on; call before building anything.
    Returns the resolved `Runtime` (`recorded`: see `resolve_runtime`)."""
    runtime = resolve_runtime(config.train, recorded=recorded)
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
    if runtime.backend == "tensorflow":
        _set_threads(runtime.threads)
    if runtime.backend == "jax" and tf.config.list_physical_devices("GPU"):
        # TensorFlow only feeds the data (tf.data, on the host): keep it off the GPUs JAX
        # uses. Possible only before TensorFlow's runtime starts, i.e. once per process.
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            pass
    return runtime
