"""Expected failures end with one message that names the file or key and what to do, a
non-zero exit, and no traceback (issue: reliability)."""

import json

import pytest

from conftest import SMOKE, call_cli, fails_cleanly
from pipeline.core.config import ConfigError, load_config
from pipeline.sweeps import sweep


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
    fails_cleanly(call_cli("train", path, "--workdir", tmp_path / "run", check=False), 2,
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
    fails_cleanly(result, 2, "meta.json is not valid JSON", "delete")
    result = call_cli("sweep", SMOKE, "--grid", "optim.lr=0.05,0.1", "--set", "train.steps=2",
                      "--sweep-dir", tmp_path, check=False)
    assert "lr-0.1__seed-0" in result.stdout and "finished" in result.stdout
    assert "broken" in result.stdout
    fails_cleanly(result, 1, "some runs did not finish")


def test_a_sweep_whose_runs_fail_exits_non_zero_and_says_why(tmp_path):
    result = call_cli("sweep", SMOKE, "--grid", "optim.lr=0.05", "--set", "data.name=cifar10",
                      "--set", f"data.data_dir={tmp_path / 'none'}", "--set", "data.download=false",
                      "--sweep-dir", tmp_path / "sweep", check=False)
    fails_cleanly(result, 1, "some runs did not finish")
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
        # The second command (in this process: the lock is the first process's) is refused
        # before the frameworks start (seconds of imports): with their start made to
        # fail, the refusal still comes.
        from pipeline.core import backend

        def frameworks_started(*args):
            raise AssertionError("the frameworks started before the lock was checked")
        with monkeypatch.context() as patched:
            patched.setattr(backend, "start_frameworks", frameworks_started)
            fails_cleanly(call_cli("train", SMOKE, *settings, "--workdir", tmp_path,
                                    check=False), 1, "is in use", "is training into it")
        assert first.poll() is None, "the first run ended before the second was tried"
    finally:
        first.send_signal(signal.SIGINT)
        _, first_stderr = first.communicate(timeout=120)
    assert first.returncode == 130 and "Traceback" not in first_stderr, first_stderr[-2000:]
    steps = [r["step"] for r in RunDirectory(tmp_path).records("train")]
    assert steps == list(range(0, 10 * len(steps), 10))  # one writer: every record once
    # The lock went with its holder: the next command gets past it, to the config check.
    other = call_cli("train", SMOKE, *settings, "--set", "train.steps=3000", "--workdir", tmp_path,
                     check=False)
    fails_cleanly(other, 2, "another config")


def test_a_lock_held_by_another_than_the_process_it_names_does_not_name_that_process(tmp_path):
    # The process that wrote .lock has ended, and another (here: this one, as a process
    # it forked would) holds the lock on: the message must not call the ended one the
    # holder, and says how to find the real one.
    import fcntl
    import os
    import subprocess
    import sys
    from pipeline.core.runs import RunBusyError, RunDirectory, refuse_if_busy
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    named = f"process {ended.stdout.strip()} on {os.uname().nodename}"
    lock = tmp_path / ".lock"
    lock.write_text(named + "\n")
    with open(lock) as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for attempt in (lambda: refuse_if_busy(tmp_path), RunDirectory(tmp_path).lock):
            with pytest.raises(RunBusyError) as refused:
                attempt()
            message = str(refused.value)
            assert f"{named} is training" not in message, message
            assert f"the file names {named}, which has ended" in message
            assert f"fuser -v {lock}" in message
    assert lock.read_text() == named + "\n"  # a refused command writes nothing
    # A holder that is alive is named as before.
    lock.write_text(f"process {os.getpid()} on {os.uname().nodename}\n")
    with open(lock) as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunBusyError, match=f"process {os.getpid()} on .* is training"):
            refuse_if_busy(tmp_path)


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
    fails_cleanly(unknown, 2, "unknown notebook(s) ['trainig']", "training")
    missing = call_cli("figures", tmp_path / "nowhere", "--output", tmp_path / "out", check=False)
    fails_cleanly(missing, 1, "does not exist")
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
    fails_cleanly(result, 1, str(path), "where a folder goes")
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


def test_an_interrupted_command_without_checkpoints_does_not_promise_a_resume(monkeypatch,
                                                                               capsys):
    import pipeline.results.report
    import pipeline.training.train
    from pipeline.__main__ import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(pipeline.results.report, "make_figures", interrupted)
    monkeypatch.setattr(pipeline.training.train, "train_from_file", interrupted)
    assert main(["figures", "runs/x"]) == 130
    assert capsys.readouterr().err.endswith("what was written is intact; rerun the same command\n")
    assert main(["train", str(SMOKE)]) == 130
    assert "rerun the same command to resume from the last checkpoint" in capsys.readouterr().err


def test_bench_measures_the_repositorys_config_from_any_folder(tmp_path, monkeypatch):
    # Its default config was relative to the working folder: from any other folder,
    # `bench` stopped with "config file not found".
    import pipeline.speed.bench
    from conftest import REPO
    from pipeline.__main__ import main
    measured = []
    monkeypatch.setattr(pipeline.speed.bench, "run_benchmarks",
                        lambda config, *args, **kwargs: measured.append(config) or "measured")
    monkeypatch.chdir(tmp_path)
    assert main(["bench"]) == 0
    assert measured == [str(REPO / "configs" / "cpu.yaml")]


def test_bench_says_what_it_measures_before_each_part(monkeypatch):
    # Minutes of silence otherwise: each part is announced before it starts.
    from pipeline.speed import bench
    said = []
    for part, result in (("loop_speeds", [{"norm": "batch", "floor_in_turns": 2.0}]),
                         ("format_loop_speeds", "loop"), ("format_first_steps", "first"),
                         ("noise_draw_seconds", (0.001, 10)), ("random_word_seconds", 0.0005),
                         ("probe_costs", ([], 0.0))):
        monkeypatch.setattr(bench, part, lambda *args, part=part, result=result:
                            said.append(part) or result)
    bench.run_benchmarks(SMOKE, ["none", "batch", "noisy_batch"], echo=said.append)
    noise = (["measuring the noise draws", "noise_draw_seconds", "random_word_seconds"]
             if bench.engines.has_module("noise_floor") else [])
    assert said == ["measuring the training loop against its floor, norms none, batch, noisy_batch",
                    "loop_speeds",
                    "measuring the time to the first step on each backend (a process each)",
                    "format_loop_speeds", "format_first_steps", *noise,
                    "measuring each probe's cost in training steps", "probe_costs"]


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
        while RunDirectory(started).read_meta().status != "running" and time.time() < deadline:
            time.sleep(0.02)
    interrupted(started, training)
    meta = RunDirectory(started).read_meta()
    assert meta.status == "interrupted" and meta.error == "interrupted (Ctrl-C)"


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
    # A run's folder linked elsewhere: its records, checkpoints or event files would land
    # in the link's target.
    for folder in ("records", "checkpoints", "tensorboard"):
        target, run = tmp_path / f"someone_elses_{folder}", tmp_path / f"run_{folder}"
        target.mkdir()
        run.mkdir()
        (run / folder).symlink_to(target)
        with pytest.raises(SymlinkRefused, match=f"run_{folder}/{folder} is a symbolic link"):
            train_and_evaluate(load_config(SMOKE, ["train.steps=2"]), run)
        assert list(target.iterdir()) == [], folder
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
    fails_cleanly(result, 2, "train.strategy=tpu, but this machine has no TPU")
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
    from pipeline.training import loop

    def bug(losses):
        raise ValueError("a deliberate bug")
    monkeypatch.setattr(loop, "first_nonfinite", bug)
    with pytest.raises(ValueError, match="a deliberate bug") as error:
        call_cli("train", SMOKE, "--set", "train.steps=2", "--workdir", tmp_path / "run")
    assert any(entry.name == "bug" for entry in error.traceback)
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["status"] == "failed" and meta["error"] == "ValueError: a deliberate bug"
