"""Run directories: layout, atomic writes, crash-safe record files, loading for analysis.

Layout of one run directory:
    config.yaml              resolved config (what produced the run)
    meta.json                versions, git revision, seed, device, strategy, status, wall time
    records/<stream>.jsonl   one JSON object per line, appended and flushed as it happens:
                             train, eval, and one stream per probe (landscape, ics, ...)
    checkpoints/ckpt-<step>.npz   model + optimizer state for resume
    tensorboard/             TensorBoard event files

Records hold `step` = number of optimizer updates applied to the weights they describe.
A killed run leaves at worst a torn last line, which readers skip and a resume rewrites.
"""

import errno
import fcntl
import json
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import InputError, UserError, require_regular_file
from pipeline.core.run_meta import DamagedMeta, RunMeta

CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"


class RunBusyError(UserError, RuntimeError):
    """Another process is training into the same run directory."""


class BrokenRunError(InputError):
    """A run directory's file cannot be read; the message names it and what to do."""


def _umask():
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def _naming(path, error):
    """`error` (an OSError from writing `path`) with the file named: a full disk or an
    oversized file reports no file name of its own."""
    if error.filename is None:
        error.filename = str(path)
    return error


def atomic_write_bytes(path, data):
    """Write `data` so that readers see the old file or the new one, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file 0600; give it the permissions any new file gets
        # (0666 less the umask), so a group sharing a results folder can read it.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise _naming(path, error)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode())


# A record is a few kB (a distributions record with its samples ~50 kB): a longer line
# is damage, named, not parsed.
MAX_RECORD_CHARS = 10_000_000


def read_records(path):
    """All complete records of a JSON-lines file. A torn last line (a crash in the middle
    of a write) is skipped; any other line that is not a record (a JSON object with a
    whole `step`), or whose step is not after the previous line's (one stream holds one
    record per step, in order: a repeated or moved line is damage), is a
    `BrokenRunError` naming the file and the line, never dropped."""
    path = Path(path)
    if not path.exists():
        return []
    require_regular_file(path, "records file")
    try:
        text = path.read_text()
    except UnicodeDecodeError as error:
        raise BrokenRunError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); "
                             "restore it, or delete the run directory to start that run over") from None
    lines = text.split("\n")
    records = []
    last = max((k for k, line in enumerate(lines) if line.strip()), default=-1)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line) if len(line) <= MAX_RECORD_CHARS else None
        except json.JSONDecodeError:
            if number - 1 == last and not text.endswith("\n"):
                continue  # a line cut by a crash: the resume rewrites the file without it
            record = None
        except RecursionError:  # nested deeper than any record is: damage, named below
            record = None
        if not (isinstance(record, dict) and isinstance(record.get("step"), int)):
            raise BrokenRunError(f"{path}, line {number}, is not a record ({line[:60]!r}); "
                                 "restore the file or remove that line, or delete the run "
                                 "directory to start that run over")
        if records and record["step"] <= records[-1]["step"]:
            raise BrokenRunError(f"{path}, line {number}, holds step {record['step']} after step "
                                 f"{records[-1]['step']} (steps must increase: a line is repeated "
                                 "or out of order); restore the file, or delete the run "
                                 "directory to start that run over")
        records.append(record)
    return records


def keep_records(path, keep):
    """Atomically rewrite `path` with the records for which `keep(record)` is true."""
    path = Path(path)
    if path.exists():
        kept = [r for r in read_records(path) if keep(r)]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


# What a run command's user can do instead of removing a link (a report's: another --output).
ANOTHER_WORKDIR = "choose another --workdir"


class SymlinkRefused(InputError):
    """A file or folder to be written is a symbolic link: writing would change its target."""

    def __init__(self, path, instead=ANOTHER_WORKDIR):
        super().__init__(f"{path} is a symbolic link, and nothing is written through a link "
                         f"(its target may be anyone's): remove the link (its target stays as "
                         f"it is), or {instead}")


def refuse_if_link(path, instead=ANOTHER_WORKDIR):
    """Raise `SymlinkRefused` if `path`, a place a command writes, is a symbolic link."""
    if Path(path).is_symlink():
        raise SymlinkRefused(path, instead)


def refuse_links_below(root, path, instead=ANOTHER_WORKDIR):
    """Raise `SymlinkRefused` if `path` or a folder between it and `root` (a folder the
    command was given, resolved once) is a symbolic link: a link planted where a command
    makes its folders would send everything it writes to the link's target."""
    path, root = Path(path), Path(root)
    for folder in [path, *path.parents]:
        if folder == root or root not in folder.parents:
            return
        refuse_if_link(folder, instead)


def make_folder(path):
    """`path` as a real folder, made if missing (its parents too); `SymlinkRefused` if it
    is a link (mkdir's exist_ok would accept the link, and every write would follow it)."""
    refuse_if_link(path)
    Path(path).mkdir(parents=True, exist_ok=True)


def open_no_follow(path, mode="a"):
    """`open(path, mode)` for appending ("a", or "a+" to read too) that never writes
    through a symbolic link: the target of a link where a run file belongs may be anyone's
    file, so such a link is refused, named (O_NOFOLLOW: no check-then-open race)."""
    flags = os.O_CREAT | os.O_APPEND | (os.O_RDWR if "+" in mode else os.O_WRONLY)
    try:
        # Non-blocking to open: a FIFO put where the file belongs would otherwise wait
        # for a reader forever. Anything but a regular file is then refused, named.
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise SymlinkRefused(path) from None
        if error.errno == errno.ENXIO:  # a FIFO without a reader
            require_regular_file(path, "run file")
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        require_regular_file(path, "run file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, mode)


class RecordWriter:
    """Appends records to `records/<stream>.jsonl`, flushed per line (survives SIGKILL)."""

    def __init__(self, path, enabled=True):
        self.path = Path(path)
        self.enabled = enabled
        self._handle = None

    def write(self, record):
        if not self.enabled:
            return
        try:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = open_no_follow(self.path, "a")
            self._handle.write(json.dumps(record, allow_nan=True) + "\n")
            self._handle.flush()
        except OSError as error:
            raise _naming(self.path, error)

    def close(self):
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def refuse_if_busy(path):
    """Raise `RunBusyError` at once if another process holds the run directory's lock
    (creates nothing; the run takes the lock itself later, `RunDirectory.lock`)."""
    lock = Path(path) / ".lock"
    if not lock.is_file():
        return
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(path, handle) from None


def _busy(path, handle):
    named = handle.read().strip()
    if named and not _has_ended(named):
        return RunBusyError(f"{path} is in use: {named} is training into it; wait for it to "
                            "end, or choose another --workdir")
    # The holder is not the process the file names: that one has ended, and a process
    # that inherited its open .lock (one it forked) holds the lock on; or the holder has
    # not written its name yet.
    ended = f" (the file names {named}, which has ended)" if named else ""
    lock = Path(path) / ".lock"
    return RunBusyError(f"{path} is in use: a process holds {lock}{ended}; `fuser -v {lock}` "
                        "shows which; wait for it to end, or choose another --workdir")


def _has_ended(holder):
    """True if `holder` ("process PID on HOST", as `RunDirectory.lock` writes it) names a
    process of this host that no longer exists (another host's cannot be checked)."""
    words = holder.split()
    if len(words) != 4 or words[0] != "process" or not words[1].isdigit():
        return False
    if words[3] != os.uname().nodename:
        return False
    try:
        os.kill(int(words[1]), 0)
    except (ProcessLookupError, OverflowError):  # no such process (or no such pid at all)
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class RunDirectory:
    """One run's folder. Only the chief worker writes (`writable=False` elsewhere)."""

    def __init__(self, path, writable=True):
        self.path = Path(path)
        self.writable = writable
        self._writers = {}
        self._lock = None

    def lock(self):
        """Become the run directory's one writer, or raise `RunBusyError` at once.

        An exclusive `flock` on `.lock`: the kernel releases it when the holder exits,
        however it exits, so a killed run never blocks its own resume.
        """
        make_folder(self.path)
        handle = open_no_follow(self.path / ".lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            error = _busy(self.path, handle)
            handle.close()
            raise error from None
        try:
            self._refuse_linked_folders()
        except SymlinkRefused:
            handle.close()
            raise
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        self._lock = handle

    def _refuse_linked_folders(self):
        """The run's own folders are real folders: records, checkpoints and event files
        written into a linked one would land in its target, anyone's folder."""
        for folder in (self.records_path("train").parent, self.checkpoint_dir,
                       self.tensorboard_dir):
            refuse_if_link(folder)

    @property
    def checkpoint_dir(self):
        return self.path / "checkpoints"

    @property
    def tensorboard_dir(self):
        return self.path / "tensorboard"

    def records_path(self, stream):
        return self.path / "records" / f"{stream}.jsonl"

    def writer(self, stream):
        if stream not in self._writers:
            self._writers[stream] = RecordWriter(self.records_path(stream), self.writable)
        return self._writers[stream]

    def records(self, stream):
        return read_records(self.records_path(stream))

    def streams(self):
        return sorted(p.stem for p in (self.path / "records").glob("*.jsonl"))

    def read_meta(self):
        """meta.json as a `RunMeta` (an empty one before the first start); a
        `BrokenRunError` naming the file if it is not JSON or a field has the wrong type."""
        path = self.path / META_FILE
        if not path.exists():
            return RunMeta()
        require_regular_file(path, "run file")
        try:
            return RunMeta.from_json(json.loads(path.read_text()))
        except RecursionError:
            raise BrokenRunError(f"{path} is nested deeper than any meta.json is; restore it, "
                                 f"or delete {self.path} to start that run over") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise BrokenRunError(f"{path} is not valid JSON ({error}); restore it, or delete "
                                 f"{self.path} to start that run over") from None
        except DamagedMeta as problem:
            raise BrokenRunError(f"{path} is damaged: {problem}; restore it, or delete "
                                 f"{self.path} to start that run over") from None

    def write_meta(self, meta):
        """Write the `RunMeta` `meta` as meta.json (atomically)."""
        if self.writable:
            atomic_write_text(self.path / META_FILE,
                              json.dumps(meta.to_json(), indent=2, sort_keys=True))

    def write_text(self, name, text):
        if self.writable:
            atomic_write_text(self.path / name, text)

    def drop_records_after(self, step):
        """Forget what a killed run wrote beyond its last checkpoint at `step`.

        Train and probe records describe the weights *before* an update (kept if
        `step` < resume step); evaluation records the weights after (kept if <=).
        """
        if not self.writable:
            return
        for stream in self.streams():
            limit = step + 1 if stream == "eval" else step
            keep_records(self.records_path(stream), lambda r, limit=limit: r["step"] < limit)

    def check_resumable(self, start, checkpointed, log_every):
        """Refuse to resume from step `start` (0: from scratch) records that do not lead up
        to it: `checkpointed`, the step meta.json says the last checkpoint holds, and no
        checkpoint to resume from (a deleted checkpoints/ folder would restart the run in
        silence), or train records that miss a logged step before `start` (a deleted or
        cut train.jsonl, a checkpoint renamed to a later step)."""
        advice = f"restore the run's files, or delete {self.path} to start that run over"
        if start == 0 and checkpointed > 0:
            raise BrokenRunError(
                f"{self.path / META_FILE} says the run was checkpointed at step {checkpointed}, "
                f"but {self.checkpoint_dir} holds no intact checkpoint to resume from; {advice}")
        logged = [r["step"] for r in self.records("train") if r["step"] < start]
        expected = list(range(0, start, log_every))
        if logged != expected:
            missing = sorted(set(expected) - set(logged))
            what = (f"misses step {missing[0]}" if missing else
                    f"holds step {sorted(set(logged) - set(expected))[0]}, which is not logged")
            raise BrokenRunError(
                f"{self.records_path('train')} {what} ({len(logged)} of the {len(expected)} "
                f"records before step {start}, where the checkpoint resumes); {advice}")

    def close(self):
        for writer in self._writers.values():
            writer.close()
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None


def read_saved_config(path):
    """A run directory's config.yaml as a dict; a `BrokenRunError` naming the file if it
    is not YAML holding the config's sections."""
    import yaml
    require_regular_file(path, "run file")
    try:
        config = yaml.safe_load(Path(path).read_text())
    except RecursionError:
        raise BrokenRunError(f"{path} is nested deeper than a run's config is; restore it, or "
                             "delete the run directory to start that run over") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise BrokenRunError(f"{path} is not valid YAML ({' '.join(str(error).split())[:200]}); "
                             "restore it, or delete the run directory to start that run "
                             "over") from None
    sections = ("model", "optim", "train", "data")
    if not (isinstance(config, dict) and all(isinstance(config.get(k), dict) for k in sections)):
        raise BrokenRunError(f"{path} does not hold a run's config (the sections "
                             f"{', '.join(sections)}); restore it, or delete the run directory "
                             "to start that run over")
    return config


@dataclass(frozen=True)
class LoadedRun:
    """A run read back for analysis. `path`: its folder; `config`: its resolved config
    (config.yaml, nested dicts); `meta`: its meta.json (`RunMeta`); `records`: {stream: DataFrame},
    one row per record; `variant`: the label tables and figures show (set when runs are
    loaded together, `results.analysis.load_runs`). Frozen: a reader cannot change what
    another reads; a relabelled run is a new object (`dataclasses.replace`)."""
    path: str
    config: dict
    meta: RunMeta
    records: dict = field(default_factory=dict)
    variant: str = ""

    @property
    def seed(self):
        return self.config["seed"]

    @property
    def family(self):
        """The registered family, or the user's factory ("package.module:function")."""
        return self.config["model"].get("factory") or self.config["model"]["family"]

    @property
    def norm(self):
        return self.config["model"]["norm"]

    @property
    def lr(self):
        return self.config["optim"]["lr"]

    @property
    def steps(self):
        """The steps the run was configured for (its length, not how far it got)."""
        return self.config["train"]["steps"]

    @property
    def status(self):
        return self.meta.status


def load_run(path):
    """The run directory at `path` as a `LoadedRun`."""
    import pandas as pd
    run = RunDirectory(path)
    config_path = run.path / CONFIG_FILE
    if not config_path.exists():
        raise FileNotFoundError(f"{run.path} is not a run directory: it has no {CONFIG_FILE}")
    from pipeline.core import run_checks
    config, meta = read_saved_config(config_path), run.read_meta()
    run_checks.check_seal(config_path, config, meta)
    records = {s: run.records(s) for s in run.streams()}
    if meta.status == "finished":  # a result: complete, and every number a number
        run_checks.check_streams(run, meta.steps or 0, config, meta, records)
        for stream, rows in records.items():
            run_checks.refuse_nonfinite(run.records_path(stream), rows)
    return LoadedRun(path=str(run.path), config=config, meta=meta,
                     records={s: pd.DataFrame(rows) for s, rows in records.items()})


def default_workdir(config_path, config=None):
    """Where a run or sweep of the config file at `config_path` goes when no folder is
    given: runs/<config name> (runs/default without a file); for a run of a user's
    network (`config.model.factory`), runs/<factory>-<norm>, a folder for each variant
    (runs/my_net.build-batch), so the same command with another model.norm trains
    beside it."""
    if config is not None and config.model.factory:
        return Path("runs") / f"{config.model.factory.replace(':', '.')}-{config.model.norm}"
    return Path("runs") / (Path(config_path).stem if config_path else "default")


def find_runs(root):
    """Run directories at or below `root` (folders holding a config.yaml), sorted."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob(CONFIG_FILE))
