"""Sweeps: planning, listing, parallel local runs, submitit, resuming, signals."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, SMOKE, call_cli, clean_environment, run_cli
from pipeline.core.config import ConfigError
from pipeline.core.runs import RunDirectory
from pipeline.sweeps import launch, sweep

STARTUP_NOISE = ("I0000", "E0000", "W0000", "WARNING: All log messages")


def test_plan_covers_grid_times_seeds_with_readable_names(tmp_path):
    runs = sweep.plan_sweep(SMOKE, ["model.norm=none,batch,noisy_batch", "optim.lr=0.1,0.5"],
                            seeds=2, sweep_dir=tmp_path)
    assert len(runs) == 12 and len({r.workdir for r in runs}) == 12
    assert runs[0].name == "norm-none__lr-0.1__seed-0"
    assert runs[0].overrides == ("model.norm=none", "optim.lr=0.1", "seed=0")
    assert runs[0].steps == 12 and runs[0].threads == "auto"
    with pytest.raises(ConfigError, match="model.norm='bn'"):
        sweep.plan_sweep(SMOKE, ["model.norm=none,bn"], sweep_dir=tmp_path)
    with pytest.raises(ValueError, match="must look like"):
        sweep.plan_sweep(SMOKE, ["model.norm"], sweep_dir=tmp_path)


def test_run_names_are_safe_folder_names_inside_the_sweep_folder(tmp_path):
    runs = sweep.plan_sweep(SMOKE, ["description=x/../../../../escaped,.hidden," + "y" * 200],
                            sweep_dir=tmp_path)
    for run in runs:
        assert run.workdir.resolve().parent == tmp_path.resolve(), run.workdir
        assert "/" not in run.name and ".." not in run.name and not run.name.startswith(".")
        assert len(run.name) <= 3 * sweep.NAME_LENGTH
    assert runs[0].name == "description-x_escaped__seed-0"
    # Cut names stay distinct: the hash of the whole value is kept.
    assert sweep.safe_name("a" * 100) != sweep.safe_name("a" * 101)
    with pytest.raises(ConfigError, match="share the folder"):
        sweep.plan_sweep(SMOKE, ["description=a/b,a_b"], sweep_dir=tmp_path)


def test_a_seed_given_with_set_is_honoured_and_two_seed_axes_are_refused(tmp_path):
    runs = sweep.plan_sweep(SMOKE, ["model.norm=none,batch"], sweep_dir=tmp_path,
                            overrides=["seed=5"])
    assert [r.overrides for r in runs] == [("model.norm=none", "seed=5"),
                                           ("model.norm=batch", "seed=5")]
    assert runs[0].name == "norm-none__seed-5"
    with pytest.raises(ConfigError, match="--set seed=... and --seeds N"):
        sweep.plan_sweep(SMOKE, [], seeds=3, sweep_dir=tmp_path, overrides=["seed=5"])
    with pytest.raises(ConfigError, match="given twice"):
        sweep.plan_sweep(SMOKE, ["seed=1,2"], seeds=2, sweep_dir=tmp_path)


@pytest.mark.parametrize("count", [sweep.MAX_SEEDS + 1, 10 ** 20])
def test_a_seed_count_past_the_limit_is_refused_before_any_run_is_planned(count, tmp_path):
    # 10**20 overflowed range() with a traceback; a count in the billions would fill the
    # memory with planned runs before checking any.
    with pytest.raises(ConfigError, match=f"--seeds {count} is more than 10,000 seeds"):
        sweep.plan_sweep(SMOKE, [], seeds=count, sweep_dir=tmp_path)
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"sweeps:\n  - config: {SMOKE}\n    seeds: {count}\n")
    with pytest.raises(ConfigError, match=f"sweep 1: seeds={count} must be a whole number from 1"):
        sweep.plan_file(plan)


@pytest.mark.parametrize("item", ["=1,2", "optim.lr=", "optim.lr", " = 1"])
def test_a_grid_axis_without_a_key_or_values_names_the_grid_option(item, tmp_path):
    with pytest.raises(ConfigError, match=f"--grid {item!r} must look like section.key=value1"):
        sweep.plan_sweep(SMOKE, [item], sweep_dir=tmp_path)


def test_a_key_given_two_ways_is_refused_rather_than_one_silently_winning(tmp_path):
    # Two axes of one key made one run named by both, holding the last axis's value; a
    # --set of a gridded key was overridden by the grid without a word.
    with pytest.raises(ConfigError, match=r"model.norm is on two --grid axes \(model.norm=batch "
                                          r"and model.norm=none,l1\); give its values in one"):
        sweep.plan_sweep(SMOKE, ["model.norm=batch", "model.norm=none,l1"], sweep_dir=tmp_path)
    with pytest.raises(ConfigError, match="optim.lr given both with --set and on a --grid axis"):
        sweep.plan_sweep(SMOKE, ["optim.lr=0.1"], sweep_dir=tmp_path, overrides=["optim.lr=0.2"])
    assert not tmp_path.joinpath("norm-batch__norm-none__seed-0").exists()


def test_jobs_and_devices_follow_the_gpus_or_the_cores(monkeypatch):
    runs = sweep.plan_sweep(SMOKE, ["model.norm=none,batch"], sweep_dir="unused")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(launch, "available_cores", lambda: 8)
    assert launch.default_jobs(runs) == 8                     # 1 thread a run by default
    two = sweep.plan_sweep(SMOKE, [], sweep_dir="u", overrides=["train.threads=2"])
    assert launch.default_jobs(two) == 4
    every_core = sweep.plan_sweep(SMOKE, [], sweep_dir="u", overrides=["train.threads=0"])
    assert launch.default_jobs(every_core) == 1
    assert launch.device_slots(3) == [None, None, None]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,3,4")
    assert launch.default_jobs(runs) == 4 and launch.default_jobs(runs, gpus_per_run=2) == 2
    assert launch.device_slots(2, gpus_per_run=2) == ["0,1", "3,4"]
    with pytest.raises(ConfigError, match="needs 6 GPUs and this machine has 4"):
        launch.device_slots(3, gpus_per_run=2)


def test_list_prints_runnable_commands(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")  # as the CLI's --backend sets it
    runs = sweep.plan_sweep(SMOKE, ["model.norm=none,batch"], seeds=2, sweep_dir=tmp_path)
    out = sweep.list_commands(runs).splitlines()
    assert len(out) == 4
    assert "-m pipeline --backend tensorflow train" in out[0] and "--set model.norm=none" in out[0]
    assert f"--workdir {tmp_path}/norm-batch__seed-1" in out[3]
    assert not any(tmp_path.iterdir())  # listing runs nothing


def test_a_plan_lists_several_sweeps_as_one_queue_in_its_order(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"""
sweeps:
  - config: {SMOKE}
    grid:
      - model.norm=batch,none
      - seed=3,4
    set:
      - train.steps=5
  - config: {SMOKE}
    folder: other
    backend: jax
    seeds: 2
    set:
      - train.steps=5
""")
    runs = sweep.plan_file(plan, tmp_path / "runs")
    assert [str(r.workdir.relative_to(tmp_path / "runs")) for r in runs] == [
        "norm-batch__seed-3", "norm-batch__seed-4", "norm-none__seed-3", "norm-none__seed-4",
        "other/seed-0", "other/seed-1"]
    assert {r.steps for r in runs} == {5}
    # YAML aliases are refused in plans as in configs (a recursive one never ends).
    aliased = tmp_path / "aliased.yaml"
    aliased.write_text(plan.read_text().replace("    set:\n      - train.steps=5\n", "    set: &short\n      - train.steps=5\n", 1).replace("    set:\n      - train.steps=5\n", "    set: *short\n"))
    with pytest.raises(ConfigError, match="aliases"):
        sweep.plan_file(aliased, tmp_path / "runs")
    commands = sweep.list_commands(runs).splitlines()
    assert "--backend tensorflow train" in commands[0] and "--backend jax train" in commands[4]
    # Two entries making the same folder, an unknown key, a flow-style grid: refused,
    # naming the file and the sweep.
    plan.write_text(f"sweeps:\n  - config: {SMOKE}\n  - config: {SMOKE}\n")
    with pytest.raises(ConfigError, match="share the folder"):
        sweep.plan_file(plan)
    plan.write_text(f"sweeps:\n  - config: {SMOKE}\n    seed: 3\n")
    with pytest.raises(ConfigError, match=r"plan.yaml, sweep 1: unknown key\(s\) seed"):
        sweep.plan_file(plan)
    plan.write_text(f"sweeps:\n  - config: {SMOKE}\n    grid: model.norm=none\n")
    with pytest.raises(ConfigError, match="'grid' must be a list"):
        sweep.plan_file(plan)
    for folder in ("null", "''", "[a]"):  # no folder named None, '' or "['a']"
        plan.write_text(f"sweeps:\n  - config: {SMOKE}\n    folder: {folder}\n")
        with pytest.raises(ConfigError, match="sweep 1: folder=.* must be a folder name"):
            sweep.plan_file(plan)
    plan.write_text("sweeps:\n  - config: missing.yaml\n")
    with pytest.raises(ConfigError, match="sweep 1: config file not found"):
        sweep.plan_file(plan)
    with pytest.raises(ConfigError, match="sweep plan not found"):
        sweep.plan_file(tmp_path / "nothing.yaml")


def test_the_demo_plan_is_valid_and_puts_its_longest_runs_first():
    path = REPO / "configs" / "demo_plan.yaml"
    header = path.read_text().split("\nsweeps:")[0]
    assert "python -m pipeline sweep --plan" in header and "Runtime" in header and "Expected" in header
    runs = sweep.plan_file(path, "runs/demo")
    assert len(runs) == 82
    names = [str(r.workdir) for r in runs]
    # The DLN's l1 runs (the longest) first, the 200-step VGG runs without probes last.
    assert names[0] == "runs/demo/dln/lr-1e-6__norm-l1__seed-0"
    assert names[-1] == "runs/demo/lr-0.1__norm-linf__seed-2"
    assert {r.backend for r in runs if "/dln/" in str(r.workdir)} == {"jax"}
    # 6 seeds for every DLN variant, paired: the same seeds for each (PROTOCOL.md section
    # 9: fixed before the runs, never raised after a result).
    seeds = {}
    for run in runs:
        if "/dln/" in str(run.workdir):
            variant = str(run.workdir.name).rsplit("__seed-", 1)[0]
            seeds.setdefault(variant, set()).add(int(run.workdir.name.rsplit("-", 1)[1]))
    assert len(seeds) == 7 and all(s == set(range(6)) for s in seeds.values())
    # The standard DLN's longer runs (PROTOCOL.md section 9): their own folder, 4x the
    # steps, BN's 6 seeds, on JAX like every DLN run, with the probes the matched rows
    # at LR 1e-6 read (ICS, the landscape).
    long = [r for r in runs if "/dln_long/" in str(r.workdir)]
    assert len(long) == 6 and {r.backend for r in long} == {"jax"}
    assert {int(r.workdir.name.rsplit("-", 1)[1]) for r in long} == set(range(6))
    assert all("probes.landscape.every=250" in r.overrides for r in long)
    assert all("train.steps=40000" in r.overrides for r in long)
    # The confirmation set (make demo-confirm): the same runs on seeds + 100, disjoint.
    confirm = sweep.plan_file(path, "runs/demo_confirm", seed_offset=100)
    def unshifted(name):
        stem, seed = name.rsplit("seed-", 1)
        return f"{stem}seed-{int(seed) - 100}"
    assert [unshifted(r.name) for r in confirm] == [r.name for r in runs]


def _records(workdir):
    return {stream: (workdir / "records" / f"{stream}.jsonl").read_bytes()
            for stream in ("train", "eval")}


@pytest.mark.slow
def test_a_sweep_continues_past_divergence_and_its_runs_equal_runs_launched_alone(
        tmp_path, monkeypatch):
    # The runs start as from a user's shell (see conftest.clean_environment).
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    sweep_dir = tmp_path / "sweep"
    runs = sweep.plan_sweep(SMOKE, ["optim.lr=0.05,1000"], sweep_dir=sweep_dir,
                            overrides=["model.norm=none", "train.steps=8"])
    runs.reverse()  # the diverging run first: the other runs after it in the same worker
    messages = []
    rows = launch.run_local(runs, jobs=1, echo=messages.append)
    assert [r["status"] for r in rows] == ["diverged", "finished"]
    assert any(m.startswith("[1/2] lr-1000__seed-0: diverged after") for m in messages), messages
    # One warm process trained both (each run's lock names its holder).
    holders = {(run.workdir / ".lock").read_text() for run in runs}
    assert len(holders) == 1, holders
    runs.reverse()
    assert "finished: step 8 of 8" in runs[0].log_path.read_text()
    assert not [line for line in runs[0].log_path.read_text().splitlines()
                if line.startswith(STARTUP_NOISE)]
    # The same run launched alone: the same records to the byte (one thread either way).
    temporary = tmp_path / "temporary"
    temporary.mkdir()
    alone = run_cli("train", SMOKE, "--set", "model.norm=none", "--set", "train.steps=8",
                    "--set", "optim.lr=0.05", "--set", "seed=0", "--workdir", tmp_path / "alone",
                    env={"TMPDIR": str(temporary)})
    # TensorFlow wrote its autograph files into the process's own temporary folder,
    # which the process removed before it ended.
    assert list(temporary.iterdir()) == []
    # A sweep's log holds plain lines, not a progress bar's carriage-return redraws.
    assert "\r" not in runs[0].log_path.read_text()
    assert _records(tmp_path / "alone") == _records(sweep_dir / "lr-0.05__seed-0")
    meta = RunDirectory(tmp_path / "alone").read_meta()
    assert meta.runtime["threads"] == 1
    # A quiet console: which run, where, how it ended; no framework start-up logging.
    lines = (alone.stdout + alone.stderr).splitlines()
    assert not [line for line in lines if line.startswith(STARTUP_NOISE)], lines
    assert lines[0].endswith("tensorflow on CPU:0, 1 thread(s), 8 steps"), lines
    assert lines[-1] == "finished: step 8 of 8"
    # Mark the finished run as interrupted: the next sweep resumes (only) it.
    meta_path = runs[0].workdir / "meta.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "status": "interrupted"}))
    messages = []
    assert sweep.runs_to_do(runs, messages.append) == [runs[0]]
    assert messages == ["[2/2] lr-1000__seed-0: already diverged, skipped"]
    rows = sweep.summarize(runs)
    assert [r["status"] for r in rows] == ["interrupted", "diverged"]
    assert rows[1]["diverged_at"] != "" and rows[0]["step"] == 8


@pytest.mark.slow
def test_a_sweep_through_submitit_runs_each_run_once_and_skips_them_when_resubmitted(tmp_path):
    from pipeline.sweeps import slurm
    runs = sweep.plan_sweep(SMOKE, ["model.norm=none,batch"], sweep_dir=tmp_path,
                            overrides=["train.steps=4"])
    messages = []
    rows = slurm.submit(runs, tmp_path, "submitit_local", echo=messages.append)
    assert [r["status"] for r in rows] == ["finished", "finished"]
    assert messages[0].startswith("submitted 2 run(s)") and (tmp_path / "slurm").is_dir()
    for run in runs:
        assert "finished: step 4 of 4" in run.log_path.read_text()
    messages.clear()
    slurm.submit(runs, tmp_path, "submitit_local", echo=messages.append)
    assert messages == [f"[{k}/2] {run.name}: already finished, skipped"
                        for k, run in enumerate(runs, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("executor, how", [
    (["--jobs", "2"], "SIGTERM"),  # passed on as it came
    (["--executor", "submitit_local"], "Ctrl-C"),  # submitit's cancel sends SIGINT
])
def test_sigterm_stops_a_sweep_and_marks_its_runs_interrupted(executor, how, tmp_path):
    """On every executor: the runs stop and record why, and none is still held when the
    command has ended, so that rerunning it at once resumes them."""
    from pipeline.core.runs import refuse_if_busy
    args = [sys.executable, "-m", "pipeline", "sweep", str(SMOKE), "--grid",
            "model.norm=none,batch", "--set", "train.steps=3000", "--set",
            "train.checkpoint_every=1000", "--set", "train.eval_every=1000",
            "--sweep-dir", str(tmp_path), *executor]
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=clean_environment())
    runs = [tmp_path / "norm-none__seed-0", tmp_path / "norm-batch__seed-0"]
    try:
        deadline = time.time() + 120
        while not all(RunDirectory(r).records("train") for r in runs) and time.time() < deadline:
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith(
        "interrupted (SIGTERM)"), stderr[-2000:]
    for run in runs:
        refuse_if_busy(run)  # raises if a process still trains into it
        meta = RunDirectory(run).read_meta()
        assert meta.status == "interrupted" and meta.error == f"interrupted ({how})", meta
        assert "Traceback" not in (run / "train.log").read_text()


def _processes_naming(text):
    """Pids of the processes whose command line holds `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:  # ended meanwhile
                pass
    return found


@pytest.mark.slow
def test_sigkill_of_a_submitit_local_sweep_leaves_no_process_behind(tmp_path):
    """SIGKILL cannot be caught: the controllers, tasks and runs that submitit's local
    executor started must end by themselves (they die with their parents), and the runs
    record that they were interrupted."""
    args = [sys.executable, "-m", "pipeline", "sweep", str(SMOKE), "--grid",
            "model.norm=none,batch", "--set", "train.steps=3000", "--set",
            "train.checkpoint_every=1000", "--set", "train.eval_every=1000",
            "--sweep-dir", str(tmp_path), "--executor", "submitit_local"]
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=clean_environment())
    runs = [tmp_path / "norm-none__seed-0", tmp_path / "norm-batch__seed-0"]
    try:
        deadline = time.time() + 120
        while not all(RunDirectory(r).records("train") for r in runs) and time.time() < deadline:
            time.sleep(0.1)
        assert len(_processes_naming(str(tmp_path))) >= 4  # controllers, tasks, runs
    finally:
        process.kill()
        process.wait()
    deadline = time.time() + 30
    while _processes_naming(str(tmp_path)) and time.time() < deadline:
        time.sleep(0.2)
    assert _processes_naming(str(tmp_path)) == []
    for run in runs:
        assert RunDirectory(run).read_meta().status == "interrupted"


def test_jobs_is_refused_where_the_executor_cannot_honour_it(tmp_path):
    result = call_cli("sweep", SMOKE, "--executor", "submitit_local", "--jobs", "2",
                      "--sweep-dir", tmp_path, check=False)
    assert result.returncode == 2 and "--jobs 2 sets how many runs the local executor" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_grid_values_equal_once_read_are_one_run_not_two(tmp_path):
    from pipeline.core.config import ConfigError
    from pipeline.sweeps.sweep import plan_sweep
    with pytest.raises(ConfigError, match="are the same run .*0.1 and 1e-1"):
        plan_sweep(SMOKE, ["optim.lr=0.1,1e-1"], sweep_dir=tmp_path)
    assert len(plan_sweep(SMOKE, ["optim.lr=0.1,0.2"], sweep_dir=tmp_path)) == 2


# A run as a sweep starts it, standing in for `pipeline train`: it takes the same
# measure against an orphaned life (interrupts.die_with_parent) and says how it ended.
ORPHAN = """
import os, sys, time
from pipeline.core import interrupts
interrupts.install()
try:
    interrupts.die_with_parent()
    print("ready", os.environ.get(interrupts.PARENT_VARIABLE), flush=True)
    time.sleep(60)
except interrupts.Terminated:
    print("terminated", flush=True)
"""
# The sweep: starts the run with `start_logged`, says so, and waits to be killed.
SWEEP = """
import sys, time
from pathlib import Path
from pipeline.sweeps import sweep
run = sweep.PlannedRun("orphan", Path("c.yaml"), (), Path(sys.argv[1]))
print(sweep.start_logged(run, [sys.executable, "-c", sys.argv[2]]).pid, flush=True)
time.sleep(60)
"""


def test_runs_a_sweep_started_end_when_the_sweep_is_killed(tmp_path):
    """SIGKILL leaves the sweep no moment to stop its runs: the kernel tells each run
    that its parent is gone (PR_SET_PDEATHSIG), and the run stops as for SIGTERM."""
    import os
    parent = subprocess.Popen([sys.executable, "-c", SWEEP, str(tmp_path), ORPHAN], cwd=REPO,
                              stdout=subprocess.PIPE, text=True, env=clean_environment())
    child = int(parent.stdout.readline())
    log = tmp_path / "train.log"
    deadline = time.time() + 60
    while "ready" not in (log.read_text() if log.exists() else "") and time.time() < deadline:
        time.sleep(0.05)
    assert log.read_text().split() == ["ready", "None"]  # not handed on to its own children
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    while _alive(child) and time.time() < deadline:
        time.sleep(0.05)
    assert log.read_text().split() == ["ready", "None", "terminated"]


def _alive(pid):
    """Whether process `pid` still runs (a zombie, ended but not reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_run_folders_that_cannot_be_made_are_refused_before_anything_runs(tmp_path):
    # Values that differ only in what a folder name drops: named, with what to do.
    with pytest.raises(ConfigError, match="description=ü and description=é; a run's folder "
                                          "keeps only letters, digits"):
        sweep.plan_sweep(SMOKE, ["description=ü,é"], sweep_dir=tmp_path)
    with pytest.raises(ConfigError, match="the same values are given twice"):
        sweep.plan_sweep(SMOKE, ["description=a,a"], sweep_dir=tmp_path)
    # Many long values: a name longer than a folder name may be (255 bytes), refused at
    # planning (it used to pass --list and fail when the run started).
    grid = [f"description={'x' * 60}", f"data.data_dir={'y' * 60}", f"optim.lr=0.{'1' * 60}",
            f"optim.momentum=0.{'2' * 60}", f"model.noise.n_mu=0.{'3' * 60}",
            f"model.noise.n_sigma=1.{'4' * 60}"]
    with pytest.raises(ConfigError, match=r"bytes, and a folder name may have 255"):
        sweep.plan_sweep(SMOKE, grid, sweep_dir=tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args, option", [
    (["sweep", "configs/smoke.yaml", "--gpus-per-run", "-2"], "--gpus-per-run: '-2'"),
    (["sweep", "configs/smoke.yaml", "--cpus-per-run", "-1"], "--cpus-per-run: '-1'"),
    (["sweep", "configs/smoke.yaml", "--time", "0"], "--time: '0'"),
    (["sweep", "configs/smoke.yaml", "--seeds", "0"], "--seeds: '0'"),
    (["sweep", "configs/smoke.yaml", "--seed-offset", "-1"], "--seed-offset: '-1'"),
    (["bench", "--sweep-jobs", "0"], "--sweep-jobs: '0'"),
    (["bench", "--sweep-jobs", "1,,2"], "--sweep-jobs: '1,,2'"),
    (["bench", "--sweep-jobs", "abc"], "--sweep-jobs: 'abc'"),
    (["bench", "--whole-steps", "0"], "--whole-steps: '0'"),
])
def test_out_of_range_options_are_refused_naming_the_option(args, option):
    result = run_cli(*args, check=False, timeout=60)
    assert result.returncode == 2 and option in result.stderr and "Traceback" not in result.stderr


def test_slurm_asks_for_the_cores_each_run_uses(tmp_path):
    from pipeline.sweeps import slurm
    runs = sweep.plan_sweep(SMOKE, ["train.threads=2,3"], sweep_dir=tmp_path)
    assert slurm._parameters("slurm", slurm.SlurmOptions(), runs)["cpus_per_task"] == 3
    everything = sweep.plan_sweep(SMOKE, [], sweep_dir=tmp_path, overrides=["train.threads=0"])
    with pytest.raises(ConfigError, match=r"train.threads=0 \(all cores\) needs --cpus-per-run"):
        slurm._parameters("slurm", slurm.SlurmOptions(), everything)
    given = slurm._parameters("slurm", slurm.SlurmOptions(cpus_per_run=8), everything)
    assert given["cpus_per_task"] == 8


def test_a_sweep_whose_submitit_folder_is_a_symlink_is_refused_before_anything_is_submitted(
        tmp_path):
    from pipeline.core.runs import SymlinkRefused
    from pipeline.sweeps import slurm
    runs = sweep.plan_sweep(SMOKE, [], sweep_dir=tmp_path / "sweep")
    elsewhere = tmp_path / "someone_elses"
    elsewhere.mkdir()
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "slurm").symlink_to(elsewhere)
    with pytest.raises(SymlinkRefused, match="sweep/slurm is a symbolic link"):
        slurm.submit(runs, tmp_path / "sweep", executor="submitit_local", echo=lambda message: None)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.slow
def test_a_sweep_with_a_run_that_cannot_start_trains_the_others_and_reports_it(tmp_path):
    from conftest import fails_cleanly
    runs = [tmp_path / f"seed-{seed}" for seed in range(3)]
    runs[1].write_text("a file where the run's folder goes")
    (runs[2] / "train.log").mkdir(parents=True)  # a folder where the run's log goes
    result = call_cli("sweep", SMOKE, "--seeds", "3", "--set", "train.steps=2",
                      "--sweep-dir", tmp_path, "--jobs", "1", check=False)
    fails_cleanly(result, 1, "some runs did not finish")
    assert RunDirectory(runs[0]).read_meta().status == "finished"
    assert "seed-1: could not start:" in result.stdout and "seed-2: could not start:" in result.stdout
    table = result.stdout[result.stdout.index("run "):]
    assert table.count("broken") == 2 and "finished" in table
