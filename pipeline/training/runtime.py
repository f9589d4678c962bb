"""Process-wide settings a run depends on: backend, seeds, op determinism, XLA, threads,
mixed precision.

`train.xla` and `train.deterministic` may be `auto`, resolved here (by the backend's
`host` module, pipeline.engines) for the machine the run starts on: bit-exact on a CPU,
speed first on a GPU or TPU unless the config asks for determinism. The resolved
choices go into meta.json.
"""

import dataclasses

import keras

from pipeline import engines


@dataclasses.dataclass(frozen=True)
class Runtime:
    accelerator: str     # "cpu", "gpu" or "tpu"
    xla: bool            # the train step is compiled with XLA
    deterministic: bool  # TensorFlow op determinism (JAX: XLA's own, on the CPU)
    backend: str = "tensorflow"  # Keras' backend: "tensorflow" or "jax"
    threads: int = 0     # intra-op threads; 0 = the framework's default


def resolve_runtime(train, accelerator=None, backend=None, recorded=None):
    """The `Runtime` that `train` (a `TrainConfig`) asks for on `accelerator` with
    `backend` (both detected when None). `recorded`: the runtime a resumed run recorded
    in meta.json; its thread count is kept where `train.threads` is auto."""
    backend = backend or engines.backend_in_use()
    host = engines.host(backend)
    accelerator = accelerator or host.accelerator()
    xla, deterministic, threads = host.resolve(train, accelerator == "cpu", recorded)
    return Runtime(accelerator, xla, deterministic, backend, threads)


def configure_runtime(config, recorded=None):
    """Set the process-global state a run depends on; call before building anything.
    Returns the resolved `Runtime` (`recorded`: see `resolve_runtime`)."""
    runtime = resolve_runtime(config.train, recorded=recorded)
    keras.backend.clear_session()  # a fresh graph and fresh layer names for each run
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_dtype_policy(config.train.precision)
    engines.host(runtime.backend).configure(runtime)
    return runtime
