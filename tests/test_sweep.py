"""Sweeps: planning, listing, running past diverged runs, skipping and resuming."""

import json

import pytest

from conftest import SMOKE, run_cli
from pipeline import sweep
from pipeline.config import ConfigError


def test_plan_covers_grid_times_seeds_with_readable_names(tmp_path):
    runs = sweep.plan_sweep(SMOKE, ["model.norm=none,batch,noisy_batch", "optim.lr=0.1,0.5"],
                            seeds=2, sweep_dir=tmp_path)
    assert len(runs) == 12 and len({r.workdir for r in runs}) == 12
    assert runs[0].name == "norm-none__lr-0.1__seed-0"
    assert runs[0].overrides == ("model.norm=none", "optim.lr=0.1", "seed=0")
    with pytest.raises(ConfigError, match="model.norm='bn'"):
        sweep.plan_sweep(SMOKE, ["model.norm=none,bn"], sweep_dir=tmp_path)
    with pytest.raises(ValueError, match="must look like"):
        sweep.plan_sweep(SMOKE, ["model.norm"], sweep_dir=tmp_path)


def test_list_prints_runnable_commands(tmp_path):
    out = run_cli("sweep", SMOKE, "--grid", "model.norm=none,batch", "--seeds", "2",
                  "--sweep-dir", tmp_path, "--list").stdout.strip().splitlines()
    assert len(out) == 4
    assert "-m pipeline --backend tensorflow train" in out[0] and "--set model.norm=none" in out[0]
    assert f"--workdir {tmp_path}/norm-batch__seed-1" in out[3]
    assert not any(tmp_path.iterdir())  # listing runs nothing


def test_sweep_continues_past_divergence_skips_finished_and_resumes_unfinished(tmp_path, monkeypatch):
    result = run_cli("sweep", SMOKE, "--grid", "optim.lr=0.05,1000", "--set", "model.norm=none",
                     "--set", "train.steps=8", "--sweep-dir", tmp_path)
    table = result.stdout
    assert "lr-0.05__seed-0" in table and "finished" in table and "diverged" in table
    runs = sweep.plan_sweep(SMOKE, ["optim.lr=0.05,1000"], sweep_dir=tmp_path,
                            overrides=["model.norm=none", "train.steps=8"])
    # Mark the finished run as interrupted: the next sweep must resume (only) it.
    meta_path = runs[0].workdir / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "status": "running"}))
    called, messages = [], []
    monkeypatch.setattr(sweep.subprocess, "call", lambda cmd: called.append(cmd) or 0)
    rows = sweep.run_sweep(SMOKE, runs, echo=messages.append)
    assert len(called) == 1 and str(runs[0].workdir) in called[0]
    assert "already diverged, skipped" in messages[1]
    assert [r["status"] for r in rows] == ["running", "diverged"]
    assert rows[1]["diverged_at"] != "" and rows[0]["step"] == 8
    assert "run" in sweep.format_table(rows).splitlines()[0]
