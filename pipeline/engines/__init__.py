"""What differs between Keras' backends, behind one interface: one package per backend
(`pipeline.engines.tensorflow`, `pipeline.engines.jax`), each with the same modules:

- `engine.py`: its `Engine`, honouring the contract of `pipeline.engines.base.Engine`:
  devices, the compiled training step, evaluation sums and the probes' primitives;
- `host.py`: process settings (accelerator detection, determinism, threads), versions;
- `kernels.py`: the layers' backend-specific parts (noise draws, fused BatchNorm, the
  layout barrier of the DLN's feature-major activations);
- optional: `noise_floor.py`, what `make bench` times of the noise kernels.

Nothing outside this package (and the tf.data input pipeline, and the backend chooser)
imports a backend or asks which one runs. A new backend is one more package with these
three modules, named as Keras names the backend.
"""

import functools
import importlib
import importlib.util

import keras


def backend_in_use():
    """The Keras backend of this process ("tensorflow" or "jax")."""
    return keras.backend.backend()


@functools.cache
def _module(backend, name):
    return importlib.import_module(f"pipeline.engines.{backend}.{name}")


def host(backend=None):
    """The `host` module of `backend` (default: this process's)."""
    return _module(backend or backend_in_use(), "host")


def kernels():
    """The `kernels` module of this process's backend."""
    return _module(backend_in_use(), "kernels")


def has_module(name):
    """True if this process's backend has the optional module `name` (e.g. noise_floor)."""
    return importlib.util.find_spec(f"pipeline.engines.{backend_in_use()}.{name}") is not None


def module(name):
    """The module `name` of this process's backend."""
    return _module(backend_in_use(), name)


def make_engine(config, runtime):
    """The engine of `runtime.backend` (this process's backend)."""
    return _module(runtime.backend, "engine").Engine(config, runtime)
