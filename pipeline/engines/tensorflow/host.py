"""TensorFlow's process settings: the accelerator, how `auto` settings resolve, op
determinism and intra-op threads, versions."""

import tensorflow as tf

from pipeline.core.config import AUTO
from pipeline.core.errors import ThreadsError
from pipeline.core.threads import run_threads
from pipeline.engines.tensorflow.strategy import accelerator_kind


def accelerator():
    return accelerator_kind()


def resolve(train, on_cpu, recorded):
    """(xla, deterministic, threads) for `train` (a TrainConfig): bit-exact on a CPU
    (op determinism on, XLA off, also the faster setting there), speed first elsewhere;
    one intra-op thread per run on a CPU, so the numerics do not depend on how the run
    was launched (a resumed run keeps its recorded count where threads is auto)."""
    threads = run_threads(train, on_cpu, recorded)  # pipeline/core/threads.py
    # XLA has no deterministic max-pool gradient, so an explicit xla=true rules it out.
    deterministic = train.deterministic if train.deterministic != AUTO else (
        on_cpu and train.xla is not True)
    xla = train.xla if train.xla != AUTO else (not on_cpu and not deterministic)
    return xla, deterministic, threads


def set_op_determinism(deterministic):
    """TensorFlow's process-global op determinism (an earlier run in this process may
    have set it; TensorFlow exports only the switch on, the switch off lives in its
    config module)."""
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        from tensorflow.python.framework import config as tf_config
        tf_config.disable_op_determinism()


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


def configure(runtime):
    set_op_determinism(runtime.deterministic)
    _set_threads(runtime.threads)


def versions():
    return {"tensorflow": tf.__version__}
