"""A process's scratch folder (temporary files: TensorFlow's autograph sources,
Matplotlib's cache where HOME is not writable, what the children write): one folder per
process under the project's cache (`$XDG_CACHE_HOME/bnlab/tmp/<pid>-...`), never in the
system's temporary folder. The process removes its own when it ends; a process killed
with SIGKILL cannot, so every start first removes the folders of processes that are gone:
a killed run leaves nothing in /tmp, and its leftovers go at the next start."""

import os
import shutil
import tempfile

from pipeline.core.tool_homes import project_cache


def scratch_root():
    return project_cache() / "tmp"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def sweep_dead(root=None):
    """Remove the scratch folders of processes that have ended; returns how many."""
    root = scratch_root() if root is None else root
    removed = 0
    if not root.is_dir():
        return removed
    for folder in root.iterdir():
        pid = folder.name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)) and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def own_scratch_folder():
    """Make this process's scratch folder (after sweeping the dead processes'), and make
    it the temporary folder of this process and its children; returns it. Where the
    project's cache cannot be written, the system's temporary folder is used instead."""
    try:
        root = scratch_root()
        root.mkdir(parents=True, exist_ok=True)
        sweep_dead(root)
        folder = tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root)
    except OSError:
        folder = tempfile.mkdtemp(prefix="bnlab-")
    os.environ["TMPDIR"] = tempfile.tempdir = folder
    return folder
