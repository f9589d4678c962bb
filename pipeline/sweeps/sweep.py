"""Sweeps: a grid of config overrides x seeds, one run directory each.

Each run is a separate `python -m pipeline train` process, so a crash or a diverged
run cannot take the sweep down. The same commands run as local processes, several at
once (pipeline.sweeps.launch), as a Slurm job array (pipeline.sweeps.slurm), or are printed by
`--list` for any other scheduler. Finished and diverged runs are skipped, unfinished
ones resume.
"""

import hashlib
import itertools
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pipeline.core import interrupts
from pipeline.core.backend import BACKENDS
from pipeline.core.config import AUTO, ConfigError, find_config, load_config, to_yaml
from pipeline.core.errors import InputError, file_kind
from pipeline.core.run_meta import RunMeta, is_done, pick, summary_row
from pipeline.core.threads import cpu_threads, xla_flags
from pipeline.core.yaml_files import read_yaml_file
from pipeline.core.runs import (RunDirectory, default_workdir, make_folder, open_no_follow,
                                refuse_links_below)

LOG_FILE = "train.log"   # a sweep's copy of each run's console output, in its run directory
NAME_LENGTH = 48         # longest value in a run name; longer ones are cut and hashed
MAX_FOLDER_BYTES = 255   # the longest file name Linux and macOS file systems allow


@dataclass(frozen=True)
class PlannedRun:
    name: str
    config: Path         # the run's YAML config file
    overrides: tuple
    workdir: Path
    steps: int = 0       # train.steps, for progress
    threads: object = AUTO  # train.threads, for how many runs fit on the CPU at once
    backend: Optional[str] = None  # its --backend (None: the sweep's own, KERAS_BACKEND)

    def command(self, verbose=False):
        """The train command, with absolute paths so that it works from any folder."""
        return [sys.executable, "-m", "pipeline", *self.arguments(verbose)]

    def arguments(self, verbose=False):
        """The train command's arguments after `python -m pipeline`: with the backend,
        so that a listed command reruns on the same one."""
        backend = self.backend_name
        args = [*(["--backend", backend] if backend else []), *(["--verbose"] if verbose else [])]
        args += ["train", str(Path(self.config).resolve())]
        for item in self.overrides:
            args += ["--set", item]
        return args + ["--workdir", str(self.workdir.resolve())]

    @property
    def backend_name(self):
        """Its backend, or the sweep's own (KERAS_BACKEND; None: the default's)."""
        return self.backend or os.environ.get("KERAS_BACKEND")

    @property
    def log_path(self):
        return self.workdir / LOG_FILE

    @property
    def cpu_threads(self):
        """Intra-op threads the run uses on a CPU (train.threads: auto is 1; 0 is all)."""
        return cpu_threads(self.threads)


STOP_SECONDS = 60  # how long a stopped run may take to write its last records


def run_environment(run, devices=None):
    """The environment of a process that trains `run`; `devices`: its
    CUDA_VISIBLE_DEVICES."""
    env = {**os.environ, "TQDM_DISABLE": "1",  # the log keeps lines, not redrawn bars
           interrupts.PARENT_VARIABLE: str(os.getpid())}  # it ends when this process ends
    # A run started by a submitit task: SIGTERM when the task ends (above), not the
    # SIGKILL that the task itself gets (pipeline/sweeps/die_with_parent), so that the run
    # records itself interrupted.
    if env.pop("BNLAB_DIE_WITH_PARENT", None):
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                 if p and not p.endswith("die_with_parent")]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        if not paths:
            env.pop("PYTHONPATH")
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = devices
    if run.backend_name == "jax":
        env["XLA_FLAGS"] = xla_flags(run.cpu_threads, env.get("XLA_FLAGS", ""))
        if not env["XLA_FLAGS"]:
            env.pop("XLA_FLAGS")
    return env


def start_logged(run, command, devices=None, own_session=False):
    """Start `command` (a run's train command) with its output appended to the run's
    log; `devices`: its CUDA_VISIBLE_DEVICES. Returns the process."""
    make_folder(run.workdir)
    env = run_environment(run, devices)
    with open_no_follow(run.log_path, "a") as log:  # the child keeps its own copy of the file
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env,
                                start_new_session=own_session)


def parse_grid(items):
    """["model.norm=none,batch", "optim.lr=0.1,0.5"] -> [("model.norm", ["none", "batch"]), ...]"""
    grid = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not values.strip() or not key:
            raise ConfigError(f"--grid {item!r} must look like section.key=value1,value2")
        if key in dict(grid):  # the runs would hold the last axis's value, named by both
            raise ConfigError(f"{key} is on two --grid axes ({key}={','.join(dict(grid)[key])} "
                              f"and {item}); give its values in one --grid")
        grid.append((key, [v.strip() for v in values.split(",")]))
    return grid


def safe_name(text):
    """`text` as one folder-name component: letters, digits and `.-+` only (nothing that
    separates or climbs paths), never starting with a dot, at most NAME_LENGTH long
    (a longer one keeps its start and a hash of the whole, so names stay distinct)."""
    name = re.sub(r"[^A-Za-z0-9.+-]+|\.{2,}", "_", str(text))
    name = re.sub(r"_+", "_", name).lstrip(".") or "_"
    if len(name) > NAME_LENGTH:
        digest = hashlib.sha1(str(text).encode()).hexdigest()[:8]
        name = f"{name[:NAME_LENGTH - 9]}_{digest}"
    return name


def _short(key, value):
    return safe_name(f"{key.split('.')[-1]}-{value}")


# More seeds per combination than this is taken for a typo: the plan holds one validated
# config per run, so a count like 10**20 would exhaust memory (or overflow) before any
# run's config was checked. The paper uses 5; a study of seed variance, hundreds.
MAX_SEEDS = 10_000


def _seeds(grid, seeds, overrides):
    """The seed axis: `--grid seed=...`, or a `--set seed=S` (that one seed), or 0..seeds-1.
    Given two ways at once, refused: one would silently override the other."""
    from_grid = [values for key, values in grid if key == "seed"]
    from_set = [item.partition("=")[2].strip() for item in overrides
                if item.partition("=")[0].strip() == "seed"]
    given = [name for name, found in (("--grid seed=...", from_grid), ("--set seed=...", from_set),
                                      ("--seeds N", seeds != 1)) if found]
    if len(given) > 1:
        raise ConfigError(f"the seeds are given twice ({' and '.join(given)}); give them one "
                          "way: --seeds N (seeds 0..N-1), --grid seed=A,B,... or --set seed=S")
    if from_grid:
        return from_grid[-1]
    if from_set:
        return from_set[-1:]
    if seeds > MAX_SEEDS:
        raise ConfigError(f"--seeds {seeds} is more than {MAX_SEEDS:,} seeds per combination; "
                          "give a smaller count, or several sweeps with --seed-offset")
    return list(range(seeds))


def sweep_folder(path, given=None):
    """The folder of a sweep of the config or plan at `path`: `given` (--sweep-dir),
    else runs/<its name>."""
    return Path(given or default_workdir(path))


def _offset(seeds, offset):
    """The seeds shifted by `offset` (a second, disjoint seed set: --seed-offset)."""
    if not offset:
        return seeds
    try:
        return [int(seed) + offset for seed in seeds]
    except (TypeError, ValueError):
        raise ConfigError(f"--seed-offset needs whole-number seeds; got {seeds!r}") from None


def plan_sweep(config_path, grid_items=(), seeds=1, sweep_dir=None, overrides=(), backend=None,
               seed_offset=0):
    """Every combination of the grid and the seeds (each plus `seed_offset`), validated
    before anything runs."""
    grid = parse_grid(grid_items)
    seed_values = _offset(_seeds(grid, seeds, overrides), seed_offset)
    both = sorted({key for key, _ in grid} - {"seed"}
                  & {item.partition("=")[0].strip() for item in overrides})
    if both:  # the grid's value would silently win over the --set
        raise ConfigError(f"{', '.join(both)} given both with --set and on a --grid axis; give "
                          "each key one way")
    grid = [(key, values) for key, values in grid if key != "seed"]
    overrides = tuple(item for item in overrides if item.partition("=")[0].strip() != "seed")
    sweep_dir = sweep_folder(config_path, sweep_dir)
    keys = [key for key, _ in grid]
    runs, resolved = [], {}
    for values in itertools.product(*[v for _, v in grid]):
        for seed in seed_values:
            items = overrides + tuple(f"{k}={v}" for k, v in zip(keys, values)) + (f"seed={seed}",)
            config = load_config(config_path, items)  # fail now, not in the middle of the sweep
            name = "__".join([_short(k, v) for k, v in zip(keys, values)] +
                             [_short("seed", seed)])
            same = resolved.setdefault(to_yaml(config), name)
            if same != name:
                raise ConfigError(f"the runs {same} and {name} are the same run (their values "
                                  "are equal once read, e.g. 0.1 and 1e-1); give each value once")
            # The file itself: a bare name of BN Lab's configs is found from any folder
            # once, here, and each run gets its path (config.find_config).
            runs.append(PlannedRun(name, find_config(config_path), items, sweep_dir / name,
                                   config.train.steps, config.train.threads, backend))
    _refuse_shared_folders(runs)
    _refuse_links(runs, sweep_dir)
    return runs


def _refuse_links(runs, sweep_dir):
    """Refuse, before anything is written, a run folder (or a plan's sub-folder) that is
    a symbolic link: the whole run would be written into the link's target."""
    for run in runs:
        refuse_links_below(sweep_dir, run.workdir, "choose another --sweep-dir")


def _refuse_shared_folders(runs):
    """Refuse run folders that cannot be made: a name longer than a folder name may be,
    or two runs in one folder (the same values given twice, or values that differ only
    in characters a folder name drops, such as 'ü' and 'é')."""
    for run in runs:
        if len(run.workdir.name.encode()) > MAX_FOLDER_BYTES:
            raise ConfigError(f"the run name {run.workdir.name[:60]}... is "
                              f"{len(run.workdir.name.encode())} bytes, and a folder name may "
                              f"have {MAX_FOLDER_BYTES}; sweep fewer keys at once, or give the "
                              "plan's sweeps folders of their own")
    by_folder = {}
    for run in runs:
        other = by_folder.setdefault(run.workdir, run)
        if other is not run:
            first, second = (" ".join(sorted(set(a.overrides) - set(b.overrides)))
                             for a, b in ((other, run), (run, other)))
            raise ConfigError(
                f"two runs would share the folder {str(run.workdir)!r}: " + (
                    f"{first} and {second}; a run's folder keeps only letters, digits and "
                    ".-+ of its values, so use values that differ in those" if first else
                    "the same values are given twice; give each grid value (and each seed "
                    "of a folder) only once"))


PLAN_KEYS = {"config", "grid", "seeds", "set", "folder", "backend"}


def plan_file(path, sweep_dir=None, seed_offset=0):
    """The runs of a sweep plan: a YAML file whose `sweeps:` list holds several sweeps,
    each as the command line would give it (`config` relative to the plan file; `grid`
    and `set` as lists of `key=values` strings; `seeds`; an optional `folder` inside the
    sweep folder and `backend`). They run as one queue, in the plan's order, so the
    machine stays busy from the first run to the last: put the longest runs first.
    `seed_offset` shifts every seed (the same plan on a disjoint seed set)."""
    path = Path(path)
    data = read_yaml_file(path, "sweep plan")
    entries = data.get("sweeps") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path} must hold 'sweeps:', a list of sweeps (see "
                          "configs/demo_plan.yaml)")
    sweep_dir = sweep_folder(path, sweep_dir)
    runs = []
    for number, entry in enumerate(entries, 1):
        where = f"{path}, sweep {number}"
        if not isinstance(entry, dict) or "config" not in entry:
            raise ConfigError(f"{where}: each sweep is a mapping with at least 'config:'")
        unknown = sorted(set(entry) - PLAN_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; use "
                              f"{', '.join(sorted(PLAN_KEYS))}")
        lists = {key: entry.get(key, []) for key in ("grid", "set")}
        for key, items in lists.items():
            if not (isinstance(items, list) and all(isinstance(i, str) for i in items)):
                raise ConfigError(f"{where}: '{key}' must be a list of 'key=value' strings, "
                                  "one per line (in a YAML block list, as commas split values)")
        seeds = entry.get("seeds", 1)
        if not isinstance(seeds, int) or isinstance(seeds, bool) or not 1 <= seeds <= MAX_SEEDS:
            raise ConfigError(f"{where}: seeds={seeds!r} must be a whole number from 1 to "
                              f"{MAX_SEEDS:,}")
        if entry.get("backend", BACKENDS[0]) not in BACKENDS:
            raise ConfigError(f"{where}: backend={entry['backend']!r} must be one of "
                              f"{', '.join(BACKENDS)}")
        if "folder" in entry and not (isinstance(entry["folder"], str) and entry["folder"].strip()):
            raise ConfigError(f"{where}: folder={entry['folder']!r} must be a folder name (or "
                              "leave 'folder' out: the runs go into the sweep folder itself)")
        folder = safe_name(entry["folder"]) if "folder" in entry else None
        try:
            runs += plan_sweep(path.parent / str(entry["config"]), lists["grid"], seeds,
                               sweep_dir / folder if folder else sweep_dir, lists["set"],
                               entry.get("backend"), seed_offset)
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None
    _refuse_shared_folders(runs)
    _refuse_links(runs, sweep_dir)  # a plan's sub-folders too
    return runs


def run_status(run):
    """The run's status from its meta.json (None before its first start); a
    `BrokenRunError` if meta.json cannot be read."""
    return RunDirectory(run.workdir).read_meta().status


def runs_to_do(runs, echo=print):
    """The runs that still need training: not finished, not diverged, not broken (one
    broken run does not stop the others); says why each other one is skipped."""
    todo = []
    for index, run in enumerate(runs, 1):
        try:
            status = run_status(run)
        except (InputError, OSError) as error:  # damaged run files: reported in the summary
            echo(f"[{index}/{len(runs)}] {run.name}: skipped: {error}")
            continue
        if is_done(status):
            echo(f"[{index}/{len(runs)}] {run.name}: already {status}, skipped")
            continue
        todo.append(run)
    return todo


def log_tail(run, lines=5):
    """The last `lines` lines of a run's log ('' if it has none)."""
    try:
        if file_kind(run.log_path) != "a regular file":  # a FIFO would block here
            return ""
        text = run.log_path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


SUMMARY_COLUMNS = ("status", "step", "diverged_at", "train_loss", "test_loss", "test_accuracy",
                   "wall_s", "error")


def could_not_start(run, error):
    """Why `run` could not start, from the error that stopped it (an OSError names its
    file: a run folder that is a file, a log that is a folder)."""
    if isinstance(error, OSError):
        where = error.filename or run.workdir
        return f"could not start: {where}: {error.strerror or error}"
    return f"could not start: {error}"


def summarize(runs, unstarted=None):
    """One row per run (`run_meta.summary_row`): status, steps done, last train loss, last
    test metrics, wall time; `unstarted`: {run folder: why it could not start}, shown as
    its error (status broken)."""
    rows = []
    for run in runs:
        directory = RunDirectory(run.workdir)
        try:
            meta, broken = directory.read_meta(), (unstarted or {}).get(run.workdir)
            train, evals = directory.records("train"), directory.records("eval")
        except (InputError, OSError) as error:  # damaged, or not what a run folder holds
            meta, broken, train, evals = RunMeta(), str(error), [], []
        row = summary_row(meta, train[-1] if train else None, evals[-1] if evals else None,
                          broken)
        rows.append({"run": run.name, **pick(row, SUMMARY_COLUMNS)})
    return rows


def format_failures(runs, rows):
    """For each run that did not end as a result, the last lines of its log."""
    blocks = []
    for run, row in zip(runs, rows):
        tail = log_tail(run) if not is_done(row["status"]) else ""
        if tail:
            blocks.append(f"--- {run.name}: last lines of {run.log_path}\n{tail}")
    return "\n".join(blocks)


def succeeded(rows):
    """True if every run ended as a result: finished or diverged (failed and interrupted
    are not)."""
    return all(is_done(row["status"]) for row in rows)


def format_table(rows):
    """A plain-text table of summary rows."""
    if not rows:
        return "(no runs)"
    columns = list(rows[0])

    def cell(value):
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    widths = {c: max(len(c), *(len(cell(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(cell(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def list_commands(runs):
    return "\n".join(shlex.join(run.command()) for run in runs)
