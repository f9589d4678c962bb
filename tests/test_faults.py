"""Expected failures end with one message that names the file or key and what to do, a
non-zero exit, and no traceback (issue: reliability)."""

import json

import pytest

from conftest import SMOKE, call_cli, run_cli
from pipeline.core.config import ConfigError, load_config
from pipeline.probes.schedule import Schedule
from pipeline.sweeps import sweep


def _fails_cleanly(result, code, *phrases):
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("# only a comment\n", "is empty"),
    ("optim: {lr: [0.1\n", "is not valid YAML"),
    ("base: [base.yaml, cpu.yaml]\n", "must be one file name"),
    ("base: 3\n", "must be one file name"),
])
def test_bad_config_files_name_the_file(text, message, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_cli_refuses_an_empty_config_at_once(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    _fails_cleanly(call_cli("train", path, "--workdir", tmp_path / "run", check=False), 2,
                   "empty.yaml is empty")
    assert not (tmp_path / "run").exists()


def test_grid_seeds_are_honoured_and_conflicting_seeds_refused(tmp_path):
    runs = sweep.plan_sweep(SMOKE, ["seed=3,4", "model.norm=none"], sweep_dir=tmp_path)
    assert [r.name for r in runs] == ["norm-none__seed-3", "norm-none__seed-4"]
    assert [r.overrides[-1] for r in runs] == ["seed=3", "seed=4"]
    assert all(sum(item.startswith("seed=") for item in r.overrides) == 1 for r in runs)
    with pytest.raises(ValueError, match=r"seeds are given twice \(--grid seed=... and --seeds N\)"):
        sweep.plan_sweep(SMOKE, ["seed=3,4"], seeds=2, sweep_dir=tmp_path)


def test_listed_commands_work_from_another_folder(tmp_path):
    listed = call_cli("sweep", "configs/smoke.yaml", "--grid", "model.norm=none",
                     "--sweep-dir", "runs/x", "--list").stdout.split()
    config = listed[listed.index("train") + 1]
    workdir = listed[listed.index("--workdir") + 1]
    assert config == str(SMOKE) and workdir.startswith("/") and workdir.endswith("runs/x/norm-none__seed-0")


def test_a_broken_meta_json_is_named_and_does_not_stop_a_sweep(tmp_path):
    runs = sweep.plan_sweep(SMOKE, ["optim.lr=0.05,0.1"], sweep_dir=tmp_path,
                            overrides=["train.steps=2"])
    runs[0].workdir.mkdir(parents=True)
    (runs[0].workdir / "meta.json").write_text('{"status": "runn\x01ing"}')
    result = call_cli("train", SMOKE, "--set", "optim.lr=0.05", "--set", "train.steps=2",
                      "--set", "seed=0", "--workdir", runs[0].workdir, check=False)
    _fails_cleanly(result, 2, "meta.json is not valid JSON", "delete")
    result = call_cli("sweep", SMOKE, "--grid", "optim.lr=0.05,0.1", "--set", "train.steps=2",
                      "--sweep-dir", tmp_path, check=False)
    assert "lr-0.1__seed-0" in result.stdout and "finished" in result.stdout
    assert "broken" in result.stdout
    _fails_cleanly(result, 1, "some runs did not finish")


def test_a_sweep_whose_runs_fail_exits_non_zero_and_says_why(tmp_path):
    result = call_cli("sweep", SMOKE, "--grid", "optim.lr=0.05", "--set", "data.name=cifar10",
                      "--set", f"data.data_dir={tmp_path / 'none'}", "--set", "data.download=false",
                      "--sweep-dir", tmp_path / "sweep", check=False)
    _fails_cleanly(result, 1, "some runs did not finish")
    assert "not started" in result.stdout or "failed" in result.stdout


@pytest.mark.slow
def test_a_second_training_on_a_busy_run_directory_is_refused_at_once(tmp_path, monkeypatch):
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO
    from pipeline.core.runs import RunDirectory
    # Long enough to be still training when the second command has started; the first
    # is then stopped by a real Ctrl-C rather than waited for.
    settings = ["--set", "train.steps=2000", "--set", "train.log_every=10",
                "--set", "train.checkpoint_every=1000", "--set", "train.eval_every=1000"]
    args = [sys.executable, "-m", "pipeline", "train", str(SMOKE), *settings,
            "--workdir", str(tmp_path)]
    first = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.time() + 120
        while not RunDirectory(tmp_path).records("train") and time.time() < deadline:
            time.sleep(0.05)
        second = run_cli("train", SMOKE, *settings, "--workdir", tmp_path, check=False)
        _fails_cleanly(second, 1, "is in use", "is training into it")
        assert first.poll() is None, "the first run ended before the second was tried"
        # Refused before the frameworks start (seconds of imports): with their start made
        # to fail, the refusal still comes.
        from pipeline.core import backend

        def frameworks_started(*args):
            raise AssertionError("the frameworks started before the lock was checked")
        with monkeypatch.context() as patched:
            patched.setattr(backend, "start_frameworks", frameworks_started)
            _fails_cleanly(call_cli("train", SMOKE, *settings, "--workdir", tmp_path,
                                    check=False), 1, "is in use", "is training into it")
    finally:
        first.send_signal(signal.SIGINT)
        _, first_stderr = first.communicate(timeout=120)
    assert first.returncode == 130 and "Traceback" not in first_stderr, first_stderr[-2000:]
    steps = [r["step"] for r in RunDirectory(tmp_path).records("train")]
    assert steps == list(range(0, 10 * len(steps), 10))  # one writer: every record once
    # The lock went with its holder: the next command gets past it, to the config check.
    other = call_cli("train", SMOKE, *settings, "--set", "train.steps=3000", "--workdir", tmp_path,
                     check=False)
    _fails_cleanly(other, 2, "another config")


def test_a_run_that_failed_before_its_first_step_takes_the_corrected_config(tmp_path):
    missing = ["--set", "data.name=cifar10", "--set", f"data.data_dir={tmp_path / 'nowhere'}",
               "--set", "data.download=false"]
    failed = call_cli("train", SMOKE, *missing, "--workdir", tmp_path / "run", check=False)
    _fails_cleanly(failed, 1, "cifar10")
    fixed = call_cli("train", SMOKE, "--set", "train.steps=4", "--workdir", tmp_path / "run")
    assert fixed.stdout.splitlines()[-1].startswith("finished")
    # Now that it has trained, another config is refused, naming the keys, and the
    # command it suggests works as printed.
    other = call_cli("train", SMOKE, "--set", "train.steps=6", "--workdir", tmp_path / "run",
                     check=False)
    _fails_cleanly(other, 2, "differing: train.steps")
    suggested = other.stderr.split("(python -m pipeline ")[1].split(")")[0].split()
    assert call_cli(*suggested).stdout.startswith("finished")


CUT_SETTINGS = ["--set", "train.steps=12", "--set", "train.log_every=1",
                "--set", "train.checkpoint_every=4"]


@pytest.fixture(scope="module")
def clean_and_cut(tmp_path_factory):
    """A 12-step run, and the same run as if killed after step 8 (checkpoints at 4 and 8,
    meta.json `running`): (clean, cut) run directories, never changed (tests copy cut)."""
    from pipeline.core.runs import RunDirectory
    folder = tmp_path_factory.mktemp("cut")
    call_cli("train", SMOKE, *CUT_SETTINGS, "--workdir", folder / "clean")
    call_cli("train", SMOKE, *CUT_SETTINGS, "--set", "train.steps=8", "--workdir", folder / "cut")
    cut = RunDirectory(folder / "cut")
    (cut.path / "config.yaml").write_text((folder / "clean" / "config.yaml").read_text())
    meta = json.loads((cut.path / "meta.json").read_text())
    (cut.path / "meta.json").write_text(json.dumps({**meta, "status": "running", "steps": 12}))
    return RunDirectory(folder / "clean"), cut


def _copy_of(run, tmp_path):
    import shutil
    from pipeline.core.runs import RunDirectory
    return RunDirectory(shutil.copytree(run.path, tmp_path / "run", symlinks=True))


def _nan_weight(path):
    import numpy as np
    with np.load(path) as saved:
        values = {key: saved[key] for key in saved.files}
    kernel = next(key for key in values if key.endswith("kernel"))
    values[kernel] = np.full_like(values[kernel], np.nan)
    np.savez(path, **values)


@pytest.mark.parametrize("damage, warning", [
    (lambda path: path.write_bytes(path.read_bytes()[:1000]), "ckpt-00000008.npz is damaged"),
    (_nan_weight, "ckpt-00000008.npz holds non-finite values (1 of"),
])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(
        damage, warning, clean_and_cut, tmp_path):
    clean, cut = clean_and_cut
    run = _copy_of(cut, tmp_path)
    damage(run.checkpoint_dir / "ckpt-00000008.npz")
    resumed = call_cli("train", SMOKE, *CUT_SETTINGS, "--workdir", run.path)
    assert warning in resumed.stderr and "Traceback" not in resumed.stderr
    assert json.loads((run.path / "meta.json").read_text())["start_step"] == 4
    for stream in ("train", "eval"):
        assert run.records(stream) == clean.records(stream), stream


def _edit_lines(path, edit):
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(edit(lines)))


def _rename(path, name):
    path.rename(path.with_name(name))


def _set_meta(run, **fields):
    meta = json.loads((run.path / "meta.json").read_text())
    (run.path / "meta.json").write_text(json.dumps({**meta, **fields}))


@pytest.mark.parametrize("damage, named, phrase", [
    (lambda run: _edit_lines(run.records_path("train"), lambda l: l[:3] + [l[2]] + l[3:]),
     "records/train.jsonl, line 4", "holds step 2 after step 2"),
    (lambda run: _edit_lines(run.records_path("eval"), lambda l: l[::-1]),
     "records/eval.jsonl, line 2", "steps must increase"),
    (lambda run: run.records_path("train").unlink(), "records/train.jsonl", "misses step 0"),
    (lambda run: _edit_lines(run.records_path("train"), lambda l: l[:5]),
     "records/train.jsonl", "misses step 5 (5 of the 8 records before step 8"),
    (lambda run: _rename(run.checkpoint_dir / "ckpt-00000008.npz", "ckpt-00000011.npz"),
     "records/train.jsonl", "misses step 8 (8 of the 11 records before step 11"),
    (lambda run: __import__("shutil").rmtree(run.checkpoint_dir), "meta.json",
     "checkpointed at step 8, but"),
    (lambda run: _set_meta(run, backend=7), "meta.json", "its backend is 7, which must be"),
    (lambda run: _set_meta(run, restarts="a"), "meta.json", "its restarts is 'a'"),
    (lambda run: _set_meta(run, runtime="x"), "meta.json", "its runtime is 'x'"),
    (lambda run: _set_meta(run, runtime={"threads": "lots"}), "meta.json", "its runtime is"),
    (lambda run: _set_meta(run, wall_time_s="s"), "meta.json", "its wall_time_s is 's'"),
])
def test_damaged_run_files_refuse_the_resume_naming_the_file(
        damage, named, phrase, clean_and_cut, tmp_path):
    """A resume never trains on over records that do not lead up to its checkpoint, nor
    restarts in silence; it changes nothing in the run (the status stays as it was)."""
    run = _copy_of(clean_and_cut[1], tmp_path)
    damage(run)
    before = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file() and p.name != ".lock"}
    resumed = call_cli("train", SMOKE, *CUT_SETTINGS, "--workdir", run.path, check=False)
    _fails_cleanly(resumed, 2, f"{run.path}/{named}" if "/" in named else named, phrase,
                   "delete")
    after = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before


def test_run_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    from pipeline.core.runs import atomic_write_text
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "meta.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "meta.json").stat().st_mode) == 0o644


def test_figures_check_notebook_names_and_run_paths_before_running_anything(tmp_path):
    unknown = call_cli("figures", tmp_path, "--notebooks", "trainig", "--output", tmp_path / "out",
                       check=False)
    _fails_cleanly(unknown, 2, "unknown notebook(s) ['trainig']", "training")
    missing = call_cli("figures", tmp_path / "nowhere", "--output", tmp_path / "out", check=False)
    _fails_cleanly(missing, 1, "does not exist")
    assert not (tmp_path / "out").exists()


def test_a_diverged_run_without_evaluations_does_not_stop_the_figures(tmp_path):
    from test_plots import write_fake_run
    from pipeline.results import analysis, plots
    write_fake_run(tmp_path / "a", "none", 0.1, 0)
    write_fake_run(tmp_path / "b", "none", 0.1, 1, diverged=True, evaluated=False)
    # The diverged run ended before its first evaluation: it stays in, and is drawn.
    chosen, _ = analysis.notebook_runs(tmp_path, "VGG runs", family="vgg",
                                       required=("train", "eval"), echo=lambda line: None)
    assert len(chosen) == 2
    fig = plots.plot_training(analysis.records_frame(chosen, "train"),
                              analysis.records_frame(chosen, "eval"))
    train_lines = [line for line in fig.axes[0].get_lines() if len(line.get_xdata())]
    assert train_lines and fig.axes[1].get_lines()
    # A finished run without evaluations is an error that names it.
    (tmp_path / "a" / "records" / "eval.jsonl").unlink()
    with pytest.raises(analysis.MissingRecordsError,
                       match=r"1 run\(s\) have no eval records: \['.*/a'\]; train or resume them") as error:
        analysis.notebook_runs(tmp_path, "VGG runs", family="vgg", required=("eval",))
    assert "probes.eval" not in str(error.value)  # no such probe: evaluations come with training


def test_a_workdir_that_is_a_file_is_named(tmp_path):
    path = tmp_path / "results.txt"
    path.write_text("mine")
    result = call_cli("train", SMOKE, "--workdir", path, check=False)
    _fails_cleanly(result, 1, str(path), "must be a folder")
    assert path.read_text() == "mine"


@pytest.mark.parametrize("raised, code, message", [
    (OSError(28, "No space left on device", "/runs/x/meta.json"), 1,
     "/runs/x/meta.json: No space left on device; free some space"),
    (PermissionError(13, "Permission denied", "/runs/x"), 1, "make it writable"),
    (KeyboardInterrupt(), 130, "interrupted (Ctrl-C): what was written is intact; rerun"),
    (__import__("pipeline.core.interrupts").core.interrupts.Terminated(), 143,
     "interrupted (SIGTERM): what was written is intact; rerun"),
])
def test_os_errors_and_ctrl_c_end_with_one_message(raised, code, message, monkeypatch, capsys):
    import pipeline.training.train
    from pipeline.__main__ import main

    def fail(*args, **kwargs):
        raise raised
    monkeypatch.setattr(pipeline.training.train, "train_from_file", fail)
    assert main(["train", str(SMOKE)]) == code
    assert message in capsys.readouterr().err


def test_a_resumed_run_forgets_the_error_of_the_failed_attempt(tmp_path):
    from pipeline.core.runs import RunDirectory
    from pipeline.training.train import train_and_evaluate

    class Interrupting:
        name, schedule = "interrupting", Schedule(range(1000))

        def __call__(self, step):
            if step == 5:
                raise KeyboardInterrupt
            return {}
    config = load_config(SMOKE, ["train.checkpoint_every=2"])
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(config, tmp_path, probes_factory=lambda *args: [Interrupting()])
    meta = RunDirectory(tmp_path).read_meta()
    assert meta["status"] == "interrupted" and meta["error"] == "interrupted (Ctrl-C)"
    assert train_and_evaluate(config, tmp_path)["status"] == "finished"
    assert "error" not in RunDirectory(tmp_path).read_meta()


@pytest.mark.slow
def test_killed_at_random_moments_and_resumed_each_time_gives_the_uninterrupted_records(tmp_path):
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO
    from pipeline.core.runs import RunDirectory
    # Checkpoints every 3 steps, so a kill also lands in or near a checkpoint write.
    settings = ["--set", "model.norm=noisy_batch", "--set", "train.steps=150",
                "--set", "train.log_every=1", "--set", "train.checkpoint_every=3",
                "--set", "train.eval_every=10", "--set", "train.steps_per_call=1"]
    killed = RunDirectory(tmp_path / "killed")
    moments = random.Random(0)
    # A killed process cannot remove its temporary folder: keep it in the test's own.
    temporary = tmp_path / "temporary"
    temporary.mkdir()
    # Two kills at random moments (each costs a process start, ~15 s on 2 slow cores).
    for attempt in range(2):
        process = subprocess.Popen([sys.executable, "-m", "pipeline", "train", str(SMOKE),
                                    *settings, "--workdir", str(killed.path)], cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env={**os.environ, "TMPDIR": str(temporary)})
        before = len(killed.records("train"))
        deadline = time.time() + 120
        while len(killed.records("train")) <= before and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(moments.uniform(0.0, 0.5))  # somewhere in the middle of training
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    killed_meta = killed.read_meta()
    assert killed_meta.get("status") == "running", "a run ended before it was killed"
    assert killed_meta["wall_time_s"] > 0  # written at checkpoints, so a killed run has it
    # The resume and the clean run need no process of their own.
    call_cli("train", SMOKE, *settings, "--workdir", killed.path)
    call_cli("train", SMOKE, *settings, "--workdir", tmp_path / "clean")
    for stream in ("train", "eval"):
        assert (killed.records_path(stream).read_bytes()
                == (tmp_path / "clean" / "records" / f"{stream}.jsonl").read_bytes()), stream
    meta = killed.read_meta()
    assert meta["status"] == "finished" and meta["restarts"] == 2 and meta["start_step"] > 0


def test_an_offline_download_fails_within_seconds_with_the_explanation(tmp_path, monkeypatch):
    from pipeline.inputs import data
    checks = []
    monkeypatch.setattr(data, "_can_reach",
                        lambda address, timeout=5.0: checks.append(timeout) and False)
    config = load_config(SMOKE, ["data.name=cifar10", f"data.data_dir={tmp_path}"])
    with pytest.raises(data.DatasetUnavailableError, match="cannot be reached.*cifar-10-binary"):
        data.load_arrays(config.data)
    # Within seconds: the loader asked a bounded reachability check before downloading.
    assert checks and all(timeout <= 5 for timeout in checks)


@pytest.mark.parametrize("text, message", [
    ("train:\n  steps: 5\n  steps: 7\n", "key 'steps' is given twice (lines 2 and 3)"),
    ("train:\n  steps: 5\ntrain:\n  log_every: 1\n", "key 'train' is given twice (lines 1 and 3)"),
])
def test_a_key_given_twice_in_a_config_file_is_refused_with_both_lines(text, message, tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == f"{path.resolve()}: {message}; keep one"


def test_a_config_file_that_is_not_utf8_and_a_seed_out_of_range_are_named(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes("description: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=f"{path.resolve()} is not UTF-8 text .* save it as UTF-8"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"^seed=-1 is out of range; it must be between 0 and 2\*\*32 - 1$"):
        load_config(SMOKE, ["seed=-1"])


def _trained(tmp_path, *overrides):
    from pipeline.training.train import train_and_evaluate
    config = load_config(SMOKE, ["train.steps=4", "train.checkpoint_every=2", *overrides])
    train_and_evaluate(config, tmp_path)
    return config


def test_a_garbage_line_inside_a_records_file_is_reported_never_dropped(tmp_path):
    from pipeline.core.runs import BrokenRunError, RunDirectory, read_records
    from pipeline.training.train import train_and_evaluate
    config = _trained(tmp_path)
    path = RunDirectory(tmp_path).records_path("train")
    lines = path.read_text().splitlines()
    for garbage in ("5", "{}", "not json"):
        path.write_text("\n".join(lines[:1] + [garbage] + lines[1:]) + "\n")
        with pytest.raises(BrokenRunError, match="train.jsonl, line 2, is not a record"):
            read_records(path)
    meta = RunDirectory(tmp_path).read_meta()
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "status": "running"}))
    with pytest.raises(BrokenRunError, match="line 2"):  # a resume would rewrite the file
        train_and_evaluate(config, tmp_path)
    assert len(path.read_text().splitlines()) == len(lines) + 1  # nothing dropped
    # Only a torn last line (no newline: a crash mid-write) is skipped.
    path.write_text("\n".join(lines) + '\n{"step": 9, "train/lo')
    assert [r["step"] for r in read_records(path)] == [r["step"] for r in map(json.loads, lines)]


@pytest.mark.parametrize("text", ["model: [1, 2\n", "- a list\n", "description: only\n"])
def test_a_damaged_config_yaml_in_a_run_directory_is_named(text, tmp_path, capsys):
    from pipeline.__main__ import main
    config = _trained(tmp_path / "run")
    (tmp_path / "run" / "config.yaml").write_text(text)
    from pipeline.core.runs import BrokenRunError
    from pipeline.training.train import train_and_evaluate
    with pytest.raises(BrokenRunError, match="config.yaml"):
        train_and_evaluate(config, tmp_path / "run")
    assert main(["claims", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'run' / 'config.yaml'}") and "delete the run" in err


def test_a_run_resumed_on_another_backend_records_the_switch(tmp_path):
    from pipeline.core.runs import RunDirectory
    from pipeline.training.train import train_and_evaluate
    config = _trained(tmp_path)
    meta = RunDirectory(tmp_path).read_meta()
    # As if steps 0-1 ran on JAX: the run resumes from its checkpoint at step 2.
    (tmp_path / "checkpoints" / "ckpt-00000004.npz").unlink()
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "status": "running", "backend": "jax"}))
    said = []
    meta = train_and_evaluate(config, tmp_path, echo=said.append)
    assert meta["backend_changes"] == [{"step": 2, "from": "jax", "to": "tensorflow"}]
    assert meta["backend"] == "tensorflow" and any("continuing on tensorflow" in s for s in said)


def test_an_interrupt_swallowed_on_its_way_is_raised_again_between_steps():
    import signal

    from pipeline.core import interrupts
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        interrupts.install()
        interrupts.raise_pending()  # nothing pending: no effect
        try:  # as in a __del__ or a callback, where Python prints and ignores it
            signal.raise_signal(signal.SIGTERM)
        except BaseException:
            pass
        with pytest.raises(interrupts.Terminated):
            interrupts.raise_pending()
    finally:
        interrupts._received.clear()
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])


def test_a_full_disk_names_the_file_it_could_not_write(tmp_path, monkeypatch):
    import errno

    from pipeline.core.runs import RecordWriter, atomic_write_text
    writer = RecordWriter(tmp_path / "records" / "train.jsonl")
    writer.write({"step": 0})

    def full(*args):
        raise OSError(errno.EFBIG, "File too large")  # no file name, as the kernel reports it
    monkeypatch.setattr(writer._handle, "write", full)
    with pytest.raises(OSError) as error:
        writer.write({"step": 1})
    assert error.value.filename == str(tmp_path / "records" / "train.jsonl")
    monkeypatch.setattr("os.fsync", full)
    with pytest.raises(OSError) as error:
        atomic_write_text(tmp_path / "meta.json", "{}")
    assert error.value.filename == str(tmp_path / "meta.json")
    assert [p.name for p in tmp_path.iterdir()] == ["records"]  # nothing half-written


def test_ctrl_c_during_start_up_and_as_training_starts_ends_with_one_line(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO, clean_environment
    from pipeline.core.runs import RunDirectory
    args = [sys.executable, "-m", "pipeline", "train", str(SMOKE), "--set", "train.steps=5000",
            "--set", "train.checkpoint_every=5000", "--set", "train.eval_every=5000"]

    def interrupted(workdir, when):
        process = subprocess.Popen([*args, "--workdir", str(workdir)], cwd=REPO, text=True,
                                   env=clean_environment(), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        when()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        lines = stderr.strip().splitlines()
        assert process.returncode == 130 and len(lines) == 1, stderr[-2000:]
        assert lines[0].startswith("interrupted (Ctrl-C): what was written is intact")
    # During the imports: nothing written at all.
    interrupted(tmp_path / "early", lambda: time.sleep(0.5))
    assert not (tmp_path / "early").exists()
    # As the first compiled call starts (Ctrl-C was once lost there): recorded, resumable.
    started = tmp_path / "started"

    def training():
        deadline = time.time() + 120
        while RunDirectory(started).read_meta().get("status") != "running" and time.time() < deadline:
            time.sleep(0.02)
    interrupted(started, training)
    meta = RunDirectory(started).read_meta()
    assert meta["status"] == "interrupted" and meta["error"] == "interrupted (Ctrl-C)"


def test_run_files_that_are_symlinks_are_refused_and_their_targets_untouched(tmp_path):
    import sys
    from pipeline.core.runs import SymlinkRefused
    from pipeline.sweeps.sweep import plan_sweep, start_logged
    from pipeline.training.train import train_and_evaluate
    outside = tmp_path / "someone_elses.txt"
    outside.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(outside)
    with pytest.raises(SymlinkRefused, match=r"\.lock is a symbolic link"):
        train_and_evaluate(load_config(SMOKE, ["train.steps=2"]), run)
    [planned] = plan_sweep(SMOKE, sweep_dir=tmp_path / "sweep")
    planned.workdir.mkdir(parents=True)
    planned.log_path.symlink_to(outside)
    with pytest.raises(SymlinkRefused, match="train.log is a symbolic link"):
        start_logged(planned, [sys.executable, "-c", "print('written')"])
    assert outside.read_text() == "precious"


def test_a_machine_without_what_the_config_asks_is_told_so(tmp_path):
    """No TPU here: the strategy says so, naming the key (TensorFlow said 'Please provide
    a TPU Name'); too few synthetic examples name the key that makes more."""
    result = call_cli("train", SMOKE, "--set", "train.strategy=tpu", "--workdir",
                      tmp_path / "run", check=False)
    _fails_cleanly(result, 2, "train.strategy=tpu, but this machine has no TPU")
    assert not (tmp_path / "run").exists()
    from pipeline.inputs.data import load_arrays, make_dataset
    config = load_config(SMOKE, ["data.batch_size=512"])
    with pytest.raises(ConfigError, match="raise data.synthetic_train_size"):
        make_dataset(config, "train", arrays=load_arrays(config.data))


def test_a_reader_that_stops_reading_is_a_normal_end(tmp_path):
    """`claims --json | head -0`: the closed pipe ends the command quietly, exit 0."""
    import subprocess
    import sys
    from conftest import REPO, clean_environment, fake_run
    fake_run(tmp_path / "run")
    process = subprocess.Popen([sys.executable, "-m", "pipeline", "claims", str(tmp_path / "run"),
                                "--json"], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=clean_environment())
    process.stdout.close()  # the reader is gone before the command writes its table
    assert process.wait(timeout=120) == 0
    assert process.stderr.read() == b""


def test_a_signal_raised_where_python_cannot_raise_it_is_not_printed():
    """A Ctrl-C landing in a garbage-collection callback (JAX's `_xla_gc_callback`, during
    TensorFlow's start-up) was printed as 'Exception ignored in ...' with a traceback; it
    is raised again by `raise_pending`, so only other such exceptions are printed."""
    import types
    from pipeline.core import interrupts
    shown = []
    for error in (KeyboardInterrupt(), interrupts.Terminated(), RuntimeError("a bug")):
        interrupts._quiet_about_interrupts(types.SimpleNamespace(exc_value=error),
                                           default=shown.append)
    assert [type(u.exc_value) for u in shown] == [RuntimeError]


def test_a_bug_that_raises_value_error_keeps_its_traceback(tmp_path, monkeypatch):
    """Only `UserError`s become one `error:` line: a ValueError from a bug (here raised
    in the training loop, as Keras or NumPy would raise one) reaches the top with its
    traceback, and the run records itself as failed with it."""
    from pipeline.training import train

    def bug(losses):
        raise ValueError("a deliberate bug")
    monkeypatch.setattr(train, "first_nonfinite", bug)
    with pytest.raises(ValueError, match="a deliberate bug") as error:
        call_cli("train", SMOKE, "--set", "train.steps=2", "--workdir", tmp_path / "run")
    assert any(entry.name == "bug" for entry in error.traceback)
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["status"] == "failed" and meta["error"] == "ValueError: a deliberate bug"
