"""Which commands start a framework: only those that compute."""

import json
import subprocess
import sys

from conftest import REPO, clean_environment, fake_run

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


def test_claims_figures_sweep_and_help_import_no_framework(tmp_path):
    for norm in ("none", "batch"):
        for seed in range(2):
            fake_run(tmp_path / "runs" / f"{norm}-{seed}", f"model.norm={norm}", f"seed={seed}")
    # Relative paths, from a folder that is not the repository: the notebooks run with
    # the repository as their working folder, so every path must be resolved once, in
    # the command (the report and its figures both land here, from the same runs).
    commands = [["claims", "runs", "--json"],
                ["sweep", "--plan", str(REPO / "configs" / "demo_plan.yaml"), "--list",
                 "--sweep-dir", "sweep"],
                # The parent of `figures` (the notebooks run in kernels of their own).
                ["figures", "runs", "--output", "report", "--notebooks", "training"],
                ["--help"]]
    # Its own process: this one has imported the frameworks long ago.
    env = {**clean_environment(), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", CHECK, json.dumps(commands)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert last["codes"] == [0, 0, 0, 0] and last["frameworks"] == []
    assert "bn_trains_faster" in result.stdout and "python -m pipeline [-h]" in result.stdout
    page = (tmp_path / "report" / "report.html").read_text()
    assert (tmp_path / "report" / "figures" / "training_accuracy.png").exists()
    assert 'src="figures/training_accuracy.png"' in page and str(tmp_path / "runs") in page
    assert not (REPO / "report").exists() and not (REPO / "runs" / "none-0").exists()
