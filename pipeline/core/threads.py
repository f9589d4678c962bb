"""The one-thread rule of a CPU run, in one place.

On a CPU the thread count changes a run's numerics (how reductions are split), so it is
part of the run (`train.threads`), never taken from how the run was launched: `auto` is
one intra-op thread on a CPU, whether the run is started alone, by a sweep with any
`--jobs`, by Slurm, or resumed (a resume keeps the count its meta.json recorded); 0 is
the framework's default (all cores). The engines' hosts apply it to TensorFlow, the
sweeps give JAX's processes the XLA flags that hold XLA to it, and the launchers count
cores with it.
"""

from pipeline.core.config import AUTO

ONE_THREAD = 1
# XLA's CPU client sizes its thread pool to the machine: two JAX runs side by side on
# two cores then fight over four threads. XLA reads its flags once, before the
# process's first computation, so they go in the environment of a JAX run's process.
# The records are byte-identical either way (measured on the DLN with every probe).
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def cpu_threads(threads):
    """Intra-op threads a run with `train.threads` = `threads` uses on a CPU (0: all)."""
    return ONE_THREAD if threads == AUTO else threads


def run_threads(train, on_cpu, recorded=None):
    """The threads a run of `train` (a TrainConfig) computes with: `cpu_threads` on a
    CPU, the framework's default (0) elsewhere unless set; a resumed run whose meta.json
    `recorded` a TensorFlow runtime keeps its count where train.threads is auto."""
    if train.threads == AUTO and (recorded or {}).get("backend") == "tensorflow" and (
            "threads" in recorded):
        return recorded["threads"]
    return cpu_threads(train.threads) if on_cpu else (0 if train.threads == AUTO else train.threads)


def xla_flags(threads, current=""):
    """XLA_FLAGS for a JAX run's process that computes with `threads` on a CPU."""
    return f"{current} {XLA_ONE_THREAD}".strip() if threads == ONE_THREAD else current
