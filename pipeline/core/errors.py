"""The errors a user meets and can act on, and the command line's exit code for each.

Every expected failure raises a subclass of one of these two (its message names the
file or key and what to do); `python -m pipeline` prints it as one `error:` line and
exits with its `exit_code`. Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """The world is not as the command needs it (a busy run, missing data or runs, a
    failed notebook): exit code 1."""
    exit_code = 1


class InputError(UserError, ValueError):
    """The command, its config or a file it reads is wrong: exit code 2."""
    exit_code = 2


class ThreadsError(UserError, RuntimeError):
    """The process already computes with another thread count than the run's (a
    framework fixes it once it starts): start the run in a new process."""
