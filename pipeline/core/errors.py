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


class ConfigError(InputError):
    """An invalid configuration; the message says which key and what to do (importable
    from pipeline.core.config too)."""


class ThreadsError(UserError, RuntimeError):
    """The process already computes with another thread count than the run's (a
    framework fixes it once it starts): start the run in a new process."""


class NotARegularFile(InputError):
    """A path the command reads or appends to is not a regular file (a FIFO would block
    the command forever, a device like /dev/zero would fill its memory)."""


def file_kind(path):
    """'a FIFO', 'a folder', 'a character device', ... for what is at `path` (which
    exists), or 'a regular file'."""
    import os
    import stat
    mode = os.stat(path).st_mode
    kinds = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"),
             (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a file")


def require_regular_file(path, what="file"):
    """Raise `NotARegularFile` (naming `path`, what it is and what it should be) unless
    `path`, which exists, is a regular file (after links)."""
    kind = file_kind(path)
    if kind != "a regular file":
        raise NotARegularFile(f"{what} {path} is {kind}; expected a regular file: replace it "
                              "with the file itself")
