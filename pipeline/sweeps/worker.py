"""A warm process for a local sweep's runs: it starts the frameworks once and then
trains the runs the sweep sends it, one after another, each as its own
`python -m pipeline train` process would.

Why: a `train` process spends ~5 s of CPU importing TensorFlow (which every run needs for
tf.data) and Keras before its first step; the demo's 78 runs paid that 78 times. A worker
pays it once per job slot and backend: the demo went from ~23-26 min to 21-22 min on two
cores (PROTOCOL.md section 9). A JAX worker also keeps its runs' compiled programs, and a
run of the same config but its seed uses them instead of tracing its own
(pipeline.engines.jax.engine.reuse_programs): ~5 s of a demo DLN run's 15-16.

What stays as it was: each run goes through the same code (`pipeline.__main__.main` with
the run's command line), writes its console output to its own `train.log`, records the
same `command` in meta.json, and writes the same records to the byte as a process of its
own (tests/test_sweep.py). Isolation where it matters: a run that does not end well
(failed, interrupted, a bug) ends its worker with it, so the next run starts in a fresh
process; so does a SIGKILL of the worker (the sweep sees the process end). A worker
starts with the settings that hold for a whole process (backend, CPU threads, GPUs,
verbosity), and the sweep gives each combination its own.

Protocol, one JSON line each way: the sweep writes `{"argv": [...], "log": path}` on
the worker's stdin; the worker answers with `{"code": N}` on its stdout when the run has
ended. End of input ends the worker. The process is `python -m pipeline [--backend B]
[--verbose] worker` (the command line's `main` calls
`pipeline.training.worker.serve` with itself: the half that trains lives there, since
sweeps never import a framework). This module is the sweep's handle on such a process.
"""

import json
import select
import subprocess
import sys

from pipeline.core.runs import open_no_follow


class Worker:
    """The sweep's handle on a worker process: `key` (backend, CPU threads, verbose) the
    settings it was started with, `env` its environment. Its own start-up output (an
    import that fails) goes to `first_log`, the log of the run it was started for."""

    def __init__(self, key, env, first_log):
        backend, _, verbose = self.key = key
        command = [sys.executable, "-m", "pipeline", *(["--backend", backend] if backend else []),
                   *(["--verbose"] if verbose else []), "worker"]
        with open_no_follow(first_log, "a") as log:
            # Its own session: a Ctrl-C in the terminal reaches the sweep, which passes it on.
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=log, env=env,
                                            text=True, start_new_session=True)

    @property
    def pid(self):
        return self.process.pid

    def fileno(self):
        """Where its answers come from: readable (select) once the run it trains ends."""
        return self.process.stdout.fileno()

    def send(self, argv, log_path):
        """Start training `python -m pipeline <argv>` into `log_path`. Raises
        BrokenPipeError if the worker has ended."""
        self.process.stdin.write(json.dumps({"argv": argv, "log": str(log_path)}) + "\n")
        self.process.stdin.flush()

    def poll(self):
        """The exit code of the run it was sent, once that has ended (the worker's own if
        it ended first, killed); None while it trains."""
        readable, _, _ = select.select([self], [], [], 0)
        if not readable:
            return None
        line = self.process.stdout.readline()
        return json.loads(line)["code"] if line else self.process.wait()

    def wait(self, timeout=None):
        return self.process.wait(timeout)

    def close(self):
        """End an idle worker (end of its input), killing it if it does not end in time."""
        try:
            self.process.stdin.close()
        except BrokenPipeError:  # it has ended already
            pass
        try:
            self.process.wait(CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


CLOSE_SECONDS = 30
