"""Which commands start a framework: only those that compute."""

import json
import subprocess
import sys

from conftest import REPO, SMOKE, clean_environment

CHECK = """
import json, sys
from pipeline.__main__ import main
codes = []
for arguments in json.loads(sys.argv[1]):
    try:
        codes.append(main(arguments))
    except SystemExit as stop:  # --help
        codes.append(stop.code)
frameworks = sorted(m for m in ("tensorflow", "jax", "keras") if m in sys.modules)
print(json.dumps({"codes": codes, "frameworks": frameworks}))
"""


def _fake_run(path, norm, seed):
    """A run directory as training writes it: resolved config, meta.json, records."""
    from pipeline.config import load_config, to_yaml
    (path / "records").mkdir(parents=True)
    (path / "config.yaml").write_text(to_yaml(load_config(SMOKE, [f"model.norm={norm}",
                                                                  f"seed={seed}"])))
    (path / "meta.json").write_text(json.dumps({"status": "finished", "step": 8, "steps": 8}))
    lines = [json.dumps({"step": step, "train/loss": 2.0 / (step + 1), "train/accuracy": 0.1 * step})
             for step in range(9)]
    (path / "records" / "train.jsonl").write_text("\n".join(lines) + "\n")


def test_claims_figures_sweep_and_help_import_no_framework(tmp_path):
    for norm in ("none", "batch"):
        for seed in range(2):
            _fake_run(tmp_path / "runs" / f"{norm}-{seed}", norm, seed)
    commands = [["claims", str(tmp_path / "runs"), "--json"],
                ["sweep", "--plan", str(REPO / "configs" / "demo_plan.yaml"), "--list",
                 "--sweep-dir", str(tmp_path / "sweep")],
                # The report part of `figures` (the notebooks run in kernels of their own).
                ["figures", str(tmp_path / "runs"), "--output", str(tmp_path / "report"),
                 "--notebooks", "dln"],
                ["--help"]]
    # Its own process: this one has imported the frameworks long ago.
    result = subprocess.run([sys.executable, "-c", CHECK, json.dumps(commands)], cwd=REPO,
                            env=clean_environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert last["codes"] == [0, 0, 0, 0] and last["frameworks"] == []
    assert "bn_trains_faster" in result.stdout and "python -m pipeline [-h]" in result.stdout
    assert (tmp_path / "report" / "report.html").exists()
