"""Resuming a run: a damaged checkpoint falls back to the one before; damaged run files
are named and never trained over; a run killed at any moment, or that failed, resumes to
the records of a run never stopped (issue: reliability)."""

import dataclasses
import json

import pytest

from conftest import SMOKE, call_cli, fails_cleanly
from pipeline.core.config import load_config
from pipeline.probes.schedule import Schedule


def test_a_run_that_failed_before_its_first_step_takes_the_corrected_config(tmp_path):
    missing = ["--set", "data.name=cifar10", "--set", f"data.data_dir={tmp_path / 'nowhere'}",
               "--set", "data.download=false"]
    failed = call_cli("train", SMOKE, *missing, "--workdir", tmp_path / "run", check=False)
    fails_cleanly(failed, 1, "cifar10")
    fixed = call_cli("train", SMOKE, "--set", "train.steps=4", "--workdir", tmp_path / "run")
    assert fixed.stdout.splitlines()[-1].startswith("finished")
    # Now that it has trained, another config is refused, naming the keys, and the
    # command it suggests works as printed.
    other = call_cli("train", SMOKE, "--set", "train.steps=6", "--workdir", tmp_path / "run",
                     check=False)
    fails_cleanly(other, 2, "differing: train.steps")
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
    sealed = json.loads((folder / "clean" / "meta.json").read_text())["config"]
    (cut.path / "meta.json").write_text(json.dumps({**meta, "status": "running", "steps": 12,
                                                    "config": sealed}))
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


def _stored(**changes):
    """Rewrite a checkpoint with some of its values changed (its identity, its step, the
    optimizer's iteration): what another run's checkpoint, or an older one renamed, is."""
    def damage(path):
        import numpy as np
        with np.load(path) as saved:
            values = {key: saved[key] for key in saved.files}
        values.update({key: np.array(value) for key, value in changes.items()})
        with open(path, "wb") as handle:
            np.savez(handle, **values)
    return damage


def _older_in_its_place(path):
    import shutil
    shutil.copyfile(path.with_name("ckpt-00000004.npz"), path)


@pytest.mark.parametrize("damage, warning", [
    (lambda path: path.write_bytes(path.read_bytes()[:1000]), "ckpt-00000008.npz is damaged"),
    (_nan_weight, "ckpt-00000008.npz holds non-finite values (1 of"),
    # Another seed's checkpoint at the same step, an older one copied or renamed to the
    # newest step, or one whose optimizer has taken other steps: not this run's, skipped.
    (_stored(**{"_run/fingerprint": "0123456789abcdef"}),
     "ckpt-00000008.npz is not this run's checkpoint: it belongs to another run"),
    (_older_in_its_place, "ckpt-00000008.npz is not this run's checkpoint: it holds step 4"),
    (lambda path: _rename(path, "ckpt-00000011.npz"),
     "ckpt-00000011.npz is not this run's checkpoint: it holds step 8, not the 11"),
    (_stored(**{"sgd/iteration": 5}), "its optimizer has taken 5 steps, not 8"),
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
    # Records of a stream the config writes, deleted before a resume: a hole, not resumed.
    (lambda run: _edit_lines(run.records_path("eval"), lambda l: l[1:]),
     "records/eval.jsonl", "misses the record of step"),
    (lambda run: __import__("shutil").rmtree(run.checkpoint_dir), "meta.json",
     "checkpointed at step 8, but"),
    (lambda run: _set_meta(run, backend=7), "meta.json", "its backend is 7, which must be"),
    (lambda run: _set_meta(run, restarts="a"), "meta.json", "its restarts is 'a'"),
    (lambda run: _set_meta(run, runtime="x"), "meta.json", "its runtime is 'x'"),
    (lambda run: _set_meta(run, runtime={"threads": "lots"}), "meta.json", "its runtime is"),
    (lambda run: _set_meta(run, wall_time_s="s"), "meta.json", "its wall_time_s is 's'"),
    (lambda run: _set_meta(run, wall_time_s=float("nan")), "meta.json", "its wall_time_s is nan"),
    (lambda run: _set_meta(run, loss_levels=[1.0, float("inf")]), "meta.json", "its loss_levels"),
    (lambda run: _set_meta(run, step=99), "meta.json", "its step is 99, beyond its steps (12)"),
    (lambda run: _set_meta(run, start_step=9), "meta.json", "its start_step is 9, beyond its step"),
])
def test_damaged_run_files_refuse_the_resume_naming_the_file(
        damage, named, phrase, clean_and_cut, tmp_path):
    """A resume never trains on over records that do not lead up to its checkpoint, nor
    restarts in silence; it changes nothing in the run (the status stays as it was)."""
    run = _copy_of(clean_and_cut[1], tmp_path)
    damage(run)
    before = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file() and p.name != ".lock"}
    resumed = call_cli("train", SMOKE, *CUT_SETTINGS, "--workdir", run.path, check=False)
    fails_cleanly(resumed, 2, f"{run.path}/{named}" if "/" in named else named, phrase,
                   "delete")
    after = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before


def test_meta_json_reads_back_as_written_keeping_fields_it_does_not_know(tmp_path):
    from pipeline.core.run_meta import RunMeta
    from pipeline.core.runs import RunDirectory
    run = RunDirectory(tmp_path)
    assert run.read_meta() == RunMeta() and not RunMeta().done  # before the first start
    written = {"status": "diverged", "step": 7, "diverged_step": 7, "wall_time_s": 1.5,
               "runtime": {"threads": None}, "from_a_newer_version": [1, 2]}
    (tmp_path / "meta.json").write_text(json.dumps(written))
    meta = run.read_meta()
    assert (meta.status, meta.diverged_step, meta.done, meta.error) == ("diverged", 7, True, None)
    assert meta.extra == {"from_a_newer_version": [1, 2]}
    # Written back: the same object; a field set to None leaves the file.
    run.write_meta(meta.with_(wall_time_s=None))
    assert json.loads((tmp_path / "meta.json").read_text()) == {
        key: value for key, value in written.items() if key != "wall_time_s"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.status = "finished"


def test_a_resumed_run_forgets_the_error_of_the_failed_attempt(tmp_path):
    from pipeline.core.runs import RunDirectory
    from pipeline.training.train import train_and_evaluate

    class Interrupting:
        name, schedule = "curvature", Schedule(range(1000))  # a declared stream

        def __call__(self, step):
            if step == 5:
                raise KeyboardInterrupt
            return {}
    config = load_config(SMOKE, ["train.checkpoint_every=2"])
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(config, tmp_path, probes_factory=lambda *args: [Interrupting()])
    meta = RunDirectory(tmp_path).read_meta()
    assert meta.status == "interrupted" and meta.error == "interrupted (Ctrl-C)"
    assert train_and_evaluate(config, tmp_path).status == "finished"
    assert RunDirectory(tmp_path).read_meta().error is None


@pytest.mark.slow
@pytest.mark.both_backends
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
    settings = ["--set", "model.norm=noisy_batch", "--set", "train.steps=60",
                "--set", "train.log_every=1", "--set", "train.checkpoint_every=3",
                "--set", "train.eval_every=10", "--set", "train.steps_per_call=1"]
    killed = RunDirectory(tmp_path / "killed")
    moments = random.Random(0)
    on_tensorflow = os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow"
    # A killed process cannot remove its scratch folder: it lies in the project's cache
    # (here the test's own), never in the system's temporary folder, and the next start
    # of any run removes it.
    temporary, cache = tmp_path / "system_tmp", tmp_path / "cache"
    temporary.mkdir()
    # The uninterrupted run first, in this process (it needs no process of its own). On
    # JAX it leaves its compiled programs in the compile cache, which the killed process
    # is told to share (its project cache is the test's own): the same programs are then
    # loaded, not compiled again (~25 s of CPU), there and by the resume.
    call_cli("train", SMOKE, *settings, "--workdir", tmp_path / "clean")
    compile_cache = {}
    if not on_tensorflow:
        import jax
        compile_cache = {"JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir}
    # Two kills at random moments (each costs a process start, ~15 s on 2 slow cores) on
    # TensorFlow; one on JAX: what the second adds (a start removes the scratch folder a
    # killed process left) does not depend on the backend.
    kills = 2 if on_tensorflow else 1
    for attempt in range(kills):
        process = subprocess.Popen([sys.executable, "-m", "pipeline", "train", str(SMOKE),
                                    *settings, "--workdir", str(killed.path)], cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env={**os.environ, "TMPDIR": str(temporary),
                                        "XDG_CACHE_HOME": str(cache), **compile_cache})
        before = len(killed.records("train"))
        deadline, last = time.time() + 120, attempt == kills - 1
        # Until a new record, and for the last kill a checkpoint to resume from.
        while time.time() < deadline and (len(killed.records("train")) <= before or (
                last and killed.read_meta().wall_time_s is None)):
            time.sleep(0.01)
        time.sleep(moments.uniform(0.0, 0.5))  # somewhere in the middle of training
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    killed_meta = killed.read_meta()
    assert killed_meta.status == "running", "a run ended before it was killed"
    assert list(temporary.iterdir()) == []  # nothing in the system's temporary folder
    from pipeline.core.scratch import sweep_dead
    scratch = cache / "bnlab" / "tmp"
    # The second start removed the first killed process's folder; the last one's is
    # left, with TensorFlow's autograph sources in it, until the next start removes it.
    [left] = list(scratch.iterdir())
    if on_tensorflow:
        assert any(f.name.startswith("__autograph") for f in left.iterdir())
    assert sweep_dead(scratch) == 1 and list(scratch.iterdir()) == []
    assert killed_meta.wall_time_s > 0  # written at checkpoints, so a killed run has it
    call_cli("train", SMOKE, *settings, "--workdir", killed.path)  # the resume, in-process
    for stream in ("train", "eval"):
        assert (killed.records_path(stream).read_bytes()
                == (tmp_path / "clean" / "records" / f"{stream}.jsonl").read_bytes()), stream
    meta = killed.read_meta()
    assert meta.status == "finished" and meta.restarts == kills and meta.start_step > 0


def _trained(tmp_path, *overrides):
    from pipeline.training.train import train_and_evaluate
    config = load_config(SMOKE, ["train.steps=4", "train.checkpoint_every=2", *overrides])
    train_and_evaluate(config, tmp_path)
    return config


def _clean_config():
    """The config of `clean_and_cut`'s clean run."""
    return load_config(SMOKE, CUT_SETTINGS[1::2])


def test_a_garbage_line_inside_a_records_file_is_reported_never_dropped(clean_and_cut, tmp_path):
    from pipeline.core.runs import BrokenRunError, RunDirectory, read_records
    from pipeline.training.train import train_and_evaluate
    config, tmp_path = _clean_config(), _copy_of(clean_and_cut[0], tmp_path).path
    path = RunDirectory(tmp_path).records_path("train")
    lines = path.read_text().splitlines()
    for garbage in ("5", "{}", "not json"):
        path.write_text("\n".join(lines[:1] + [garbage] + lines[1:]) + "\n")
        with pytest.raises(BrokenRunError, match="train.jsonl, line 2, is not a record"):
            read_records(path)
    meta = RunDirectory(tmp_path).read_meta()
    (tmp_path / "meta.json").write_text(json.dumps({**meta.to_json(), "status": "running"}))
    with pytest.raises(BrokenRunError, match="line 2"):  # a resume would rewrite the file
        train_and_evaluate(config, tmp_path)
    assert len(path.read_text().splitlines()) == len(lines) + 1  # nothing dropped
    # Only a torn last line (no newline: a crash mid-write) is skipped.
    path.write_text("\n".join(lines) + '\n{"step": 9, "train/lo')
    assert [r["step"] for r in read_records(path)] == [r["step"] for r in map(json.loads, lines)]


@pytest.mark.parametrize("text", ["model: [1, 2\n", "- a list\n", "description: only\n"])
def test_a_damaged_config_yaml_in_a_run_directory_is_named(text, clean_and_cut, tmp_path, capsys):
    from pipeline.__main__ import main
    config = _clean_config()
    _copy_of(clean_and_cut[0], tmp_path)  # into tmp_path / "run"
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
    (tmp_path / "meta.json").write_text(
        json.dumps({**meta.to_json(), "status": "running", "backend": "jax"}))
    said = []
    meta = train_and_evaluate(config, tmp_path, echo=said.append)
    assert meta.backend_changes == [{"step": 2, "from": "jax", "to": "tensorflow"}]
    assert meta.backend == "tensorflow" and any("continuing on tensorflow" in s for s in said)


def test_a_config_yaml_edited_after_the_run_is_refused_by_claims_and_by_a_resume(
        clean_and_cut, tmp_path):
    import shutil
    clean, cut = clean_and_cut
    for source, name in ((clean, "finished"), (cut, "resumable")):
        run = tmp_path / name
        shutil.copytree(source.path, run)
        config = run / "config.yaml"
        config.write_text(config.read_text().replace("lr: 0.05", "lr: 0.5", 1))
        assert "lr: 0.5" in config.read_text()
        claims = call_cli("claims", run, check=False)
        fails_cleanly(claims, 2, f"{config} no longer holds the config the run trained with",
                      "differing: optim.lr")
        # The README's advice for a resume, on the edited file: refused, not trained on.
        before = sorted(p.name for p in (run / "checkpoints").iterdir())
        resumed = call_cli("train", config, "--workdir", run, check=False)
        fails_cleanly(resumed, 2, "differing: optim.lr")
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


def test_a_finished_runs_records_with_a_hole_or_a_nan_are_named_by_claims(clean_and_cut, tmp_path):
    import shutil
    clean, _ = clean_and_cut
    holed, nan = tmp_path / "holed", tmp_path / "nan"
    for run in (holed, nan):
        shutil.copytree(clean.path, run)
    _edit_lines(holed / "records" / "eval.jsonl", lambda lines: lines[:-1])
    fails_cleanly(call_cli("claims", holed, check=False), 2, "records/eval.jsonl misses the "
                  "record of step 12")
    _edit_lines(nan / "records" / "train.jsonl",
                lambda lines: lines[:3] + [lines[3].replace('"train/loss": ', '"train/loss": NaN, "x": ', 1)] + lines[4:])
    fails_cleanly(call_cli("claims", nan, check=False), 2, "records/train.jsonl, line 4 (step 3): "
                  "train/loss is not a finite number in a finished run")
