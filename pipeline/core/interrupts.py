"""Ctrl-C and SIGTERM as exceptions, so that a command ends cleanly at any moment.

Schedulers (Slurm, Kubernetes, a sweep stopping its children) send SIGTERM before they
kill; Python's default for it is to die on the spot, leaving `meta.json` at `running`.
`install()` turns SIGTERM into `Terminated`, which unwinds like Ctrl-C's
`KeyboardInterrupt`: the run records itself as interrupted and the command exits with
the shell's code for the signal (128 + its number: 130 for SIGINT, 143 for SIGTERM).
"""

import os
import signal
import sys

PARENT_VARIABLE = "BNLAB_PARENT_PID"  # set by a sweep for the train processes it starts
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

_received = []  # signals received in this process, in order


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt, so that no `except
    Exception` swallows it."""


def _exception(signum):
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _handle(signum, frame):
    _received.append(signum)
    if is_interrupt(sys.exc_info()[1]):
        # A stop is already unwinding (this runs inside its `except` or `finally`): a
        # second signal must not cut short the cleanup that records it, nor replace its
        # reason. It comes, for example, from a parent that escalates (submitit's local
        # controller kills its task 1 s after Ctrl-C, and the run then gets SIGTERM from
        # `die_with_parent`). A process that must end now can still be sent SIGKILL.
        return
    raise _exception(signum)


def install():
    """Make SIGINT raise KeyboardInterrupt and SIGTERM `Terminated` in the main thread,
    and remember that they came (see `raise_pending`)."""
    signal.signal(signal.SIGINT, _handle)
    signal.signal(signal.SIGTERM, _handle)
    sys.unraisablehook = _quiet_about_interrupts


def _quiet_about_interrupts(unraisable, default=sys.unraisablehook):
    """Python prints an exception it cannot raise (one from a garbage-collection callback,
    as JAX's `_xla_gc_callback`, or a `__del__`) as 'Exception ignored in ...' with its
    traceback. A signal's exception raised there is not lost: `raise_pending` raises it
    again where the program can stop cleanly, so it is not printed; anything else is."""
    if not is_interrupt(unraisable.exc_value):
        default(unraisable)


def raise_pending():
    """Raise again a signal that arrived but did not stop the program: Python raises it
    wherever the main thread is, and there (in a `__del__` or a callback, as during a
    framework's first compiled call) it can be printed and ignored. Long loops call this
    between steps."""
    if _received:
        raise _exception(_received[0])  # the first signal is the reason for the stop


def is_interrupt(error):
    return isinstance(error, (KeyboardInterrupt, Terminated))


def interrupt_behind(error):
    """The interrupt that `error` stands for: `error` itself if it is one; else, if a
    signal arrived before it, that signal's exception (a Ctrl-C landing inside a
    framework's tracing can come out as the framework's own error); else None."""
    if is_interrupt(error):
        return error
    return _exception(_received[0]) if _received else None


def describe(error):
    """'Ctrl-C' or 'SIGTERM', for messages and meta.json."""
    return "SIGTERM" if isinstance(error, Terminated) else "Ctrl-C"


def exit_code(error):
    """The shell's exit code for the interrupt `error`."""
    number = signal.SIGTERM if isinstance(error, Terminated) else signal.SIGINT
    return 128 + int(number)


def signal_of(error):
    """The signal that stops child processes because of `error`: Ctrl-C's own for Ctrl-C,
    SIGTERM for anything else (SIGTERM itself, or an error of the parent)."""
    return signal.SIGINT if isinstance(error, KeyboardInterrupt) else signal.SIGTERM


def die_with_parent():
    """In a process a sweep started (its parent's pid in BNLAB_PARENT_PID): be sent
    SIGTERM when that parent ends, however it ends (SIGKILL included), so that no run
    trains on unwatched, holding its run directory; the run then records itself as
    interrupted. Linux only (prctl); elsewhere the sweep's own signal handling remains.
    The variable is removed so that no process this one starts inherits it."""
    parent = os.environ.pop(PARENT_VARIABLE, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if str(os.getppid()) != parent:  # it ended before prctl took effect
        _received.append(signal.SIGTERM)
        raise Terminated()
