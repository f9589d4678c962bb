"""The in-process half of a local sweep's warm worker (`python -m pipeline worker`): it
starts the frameworks once and then trains the runs the sweep sends it, one after
another, each as its own `python -m pipeline train` process would. The sweep's handle
on such a process, and why it exists, are in pipeline/sweeps/worker.py; this half lives
here because it trains (it imports Keras and the engines), and sweeps never import a
framework.

Protocol, one JSON line each way: the sweep writes `{"argv": [...], "log": path}` on
the worker's stdin; the worker answers with `{"code": N}` on its stdout when the run has
ended. End of input ends the worker.
"""

import gc
import json
import os
import sys
import traceback

from pipeline.core import interrupts
from pipeline.core.errors import InputError
from pipeline.core.runs import open_no_follow


def train_logged(command_line, argv, log_path):
    """Run `python -m pipeline <argv>` (`command_line`: its `main`) in this process with
    its output (this process's file descriptors 1 and 2, so the frameworks' own lines too)
    appended to `log_path`; returns its exit code."""
    with open_no_follow(log_path, "a") as log:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    # sys.argv[0] is already what `python -m pipeline` puts there: meta.json's `command`
    # reads as that of a process of the run's own.
    sys.argv = [sys.argv[0], *argv]
    try:
        return command_line(argv)
    except SystemExit as stop:  # argparse's, for a command line it refuses
        return stop.code if isinstance(stop.code, int) else 1
    except Exception:  # a bug: what Python does with it in a process of its own
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def forget_the_run():
    """Drop what the last run left in the process: Keras' global state (layer names,
    seed generators). The JAX engine's compiled programs stay: a later run of the same
    config but its seed reuses them (pipeline.engines.jax.engine.reuse_programs)."""
    import keras
    keras.backend.clear_session()
    gc.collect()


class BadRequest(InputError):
    """A line sent to the worker that is not a request it can carry out."""


def parse_request(line):
    """{"argv": [text, ...], "log": text} from one line of the worker's input; a
    `BadRequest` saying what is wrong otherwise (a sweep sends only such lines)."""
    try:
        request = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        raise BadRequest(f"the worker reads one JSON request a line ({{\"argv\": [...], "
                         f"\"log\": \"file\"}}); got {line[:60]!r}") from None
    if not (isinstance(request, dict) and isinstance(request.get("argv"), list)
            and all(isinstance(a, str) for a in request["argv"])
            and isinstance(request.get("log"), str)):
        raise BadRequest(f"a worker request needs \"argv\" (a list of text) and \"log\" (a "
                         f"file name); got {line[:60]!r}")
    return request


def serve(command_line, commands=None, answers=None):
    """Train each run `commands` (lines; default stdin) asks for with `command_line`
    (pipeline.__main__.main); answer each with its exit code on `answers` (default this
    process's stdout as it started: descriptor 1 itself becomes each run's log). Returns
    the worker's exit code: 0, or that of the first run that did not end well (the
    worker stops there)."""
    commands = commands or sys.stdin
    answers = answers or os.fdopen(os.dup(1), "w")
    from pipeline import engines
    if engines.backend_in_use() == "jax":
        engines.module("engine").reuse_programs()
    try:
        for line in commands:
            request = parse_request(line)
            code = train_logged(command_line, request["argv"], request["log"])
            answers.write(json.dumps({"code": code}) + "\n")
            answers.flush()
            if code != 0:
                return code
            interrupts.raise_pending()  # a signal that came as the run ended: stop too
            forget_the_run()
    except (KeyboardInterrupt, interrupts.Terminated) as error:  # between runs: no run to record
        return interrupts.exit_code(error)
    return 0
