"""Hostile inputs and hostile file systems (issues 41 and 42): links planted where run
folders go, files that are not regular files, nesting too deep, a deleted working folder,
a warm worker sent garbage, a full disk under a report: each ends in one error line that
names the file and what to do, or is refused before anything is written."""

import pytest

from conftest import SMOKE, call_cli, fails_cleanly
from pipeline.core.config import load_config

pytestmark = pytest.mark.backend_free  # trains nothing: run once, in the JAX pass


def test_a_run_folder_that_is_a_symlink_is_refused_before_anything_is_written(tmp_path):
    from pipeline.core.runs import SymlinkRefused
    from pipeline.training.train import train_and_evaluate
    target = tmp_path / "someone_elses"
    target.mkdir()
    # train --workdir: the run folder itself.
    (tmp_path / "linked_run").symlink_to(target)
    with pytest.raises(SymlinkRefused, match="linked_run is a symbolic link"):
        train_and_evaluate(load_config(SMOKE, ["train.steps=2"]), tmp_path / "linked_run")
    # A sweep: a link planted where a run folder goes, or where a plan's sub-folder goes,
    # stops the sweep with one line before any run starts.
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "norm-batch__seed-0").symlink_to(target)
    result = call_cli("sweep", SMOKE, "--grid", "model.norm=none,batch", "--sweep-dir", sweep,
                      check=False)
    fails_cleanly(result, 2, "norm-batch__seed-0 is a symbolic link")
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"sweeps:\n  - config: {SMOKE}\n    folder: sub\n")
    (tmp_path / "plan_sweep").mkdir()
    (tmp_path / "plan_sweep" / "sub").symlink_to(target)
    result = call_cli("sweep", "--plan", plan, "--sweep-dir", tmp_path / "plan_sweep",
                      check=False)
    fails_cleanly(result, 2, "plan_sweep/sub is a symbolic link")
    assert list(target.iterdir()) == [] and sorted(p.name for p in sweep.iterdir()) == [
        "norm-batch__seed-0"]


def test_run_files_that_are_not_files_or_nest_too_deep_are_named_not_read_forever(tmp_path):
    import os
    from conftest import fake_run
    runs = {name: fake_run(tmp_path / name, "seed=0") for name in
            ("zero", "fifo_meta", "fifo_config", "deep_record", "deep_meta")}
    (runs["zero"] / "records" / "eval.jsonl").unlink()
    (runs["zero"] / "records" / "eval.jsonl").symlink_to("/dev/zero")  # never ends
    for name, file in (("fifo_meta", "meta.json"), ("fifo_config", "config.yaml")):
        (runs[name] / file).unlink()
        os.mkfifo(runs[name] / file)  # opened to read, it waits for a writer forever
    train = runs["deep_record"] / "records" / "train.jsonl"
    train.write_text(train.read_text() + '{"step": 9, "x": ' + "[" * 200000 + "]" * 200000 + "}\n")
    (runs["deep_meta"] / "meta.json").write_text('{"a": ' + "[" * 100000 + "]" * 100000 + "}")
    expected = {"zero": "records/eval.jsonl is a character device; expected a regular file",
                "fifo_meta": "meta.json is a FIFO (named pipe); expected a regular file",
                "fifo_config": "config.yaml is a FIFO (named pipe); expected a regular file",
                "deep_record": "records/train.jsonl, line 10, is not a record",
                "deep_meta": "meta.json is nested deeper than any meta.json is"}
    for name, phrase in expected.items():
        fails_cleanly(call_cli("claims", runs[name], check=False), 2, phrase)


def test_a_run_log_or_lock_that_is_a_fifo_is_refused_at_once(tmp_path):
    import os
    from pipeline.core.errors import NotARegularFile
    from pipeline.core.runs import open_no_follow
    for name in ("train.log", ".lock"):
        os.mkfifo(tmp_path / name)  # opened to append, it would wait for a reader forever
        with pytest.raises(NotARegularFile, match=rf"{name} is a FIFO \(named pipe\); expected a regular"):
            open_no_follow(tmp_path / name, "a+" if name == ".lock" else "a")


@pytest.mark.parametrize("line, phrase", [
    ("not json", "the worker reads one JSON request a line"),
    ('{"argv": ["train"]}', "a worker request needs \"argv\" (a list of text) and \"log\""),
])
def test_the_warm_worker_answers_a_bad_request_in_one_line(line, phrase, monkeypatch):
    import io
    import sys
    # In this process (a worker's process would start the frameworks to read one line).
    monkeypatch.setattr(sys, "stdin", io.StringIO(line + "\n"))
    result = call_cli("worker", check=False)
    fails_cleanly(result, 2, phrase)
    assert result.stderr.strip().count("\n") == 0  # one line


def test_a_command_from_a_deleted_working_folder_says_so(tmp_path):
    import subprocess
    import sys
    from conftest import REPO, clean_environment
    gone = tmp_path / "gone"
    gone.mkdir()
    script = f"cd {gone} && rmdir {gone} && {sys.executable} -m pipeline claims runs"
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                            env={**clean_environment(), "PYTHONPATH": str(REPO)})
    fails_cleanly(result, 1, "the working folder no longer exists")
    assert "a file:" not in result.stderr


def test_a_full_disk_while_building_a_report_names_the_output(tmp_path, monkeypatch):
    import errno
    from conftest import fake_run
    from pipeline.results import report

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")  # names no file
    monkeypatch.setattr(report, "_build", full)
    fake_run(tmp_path / "run", "seed=0")
    result = call_cli("figures", tmp_path / "run", "--output", tmp_path / "out", check=False)
    fails_cleanly(result, 1, f"error: {tmp_path / 'out'}: No space left on device; free some space")
