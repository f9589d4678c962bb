"""The package's floor plan (packages import only those below them) and which commands
start a framework: only those that compute."""

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


# The code map of pipeline/__init__.py, bottom up: a package imports only packages
# before it here (`pipeline` is its __init__, the version; `__main__` the command line).
LAYERS = ["pipeline", "core", "inputs", "engines", "nets", "probes", "training", "sweeps",
          "results", "speed", "__main__"]


def _package_imports():
    """{(importing package, imported package): 'module -> module'} over every import of
    pipeline's modules, those inside functions included (a lazy import is an import)."""
    import ast
    edges = {}
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts  # ("pipeline", "core", "runs")
        source = parts[1] if len(parts) > 2 else parts[1].replace("__init__", "pipeline")
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module] + [f"{node.module}.{a.name}" for a in node.names]
                     if isinstance(node, ast.ImportFrom) and node.module else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                if name.split(".")[0] != "pipeline":
                    continue
                target = name.split(".")[1] if name.count(".") else "pipeline"
                if target in LAYERS and target != source:
                    edges.setdefault((source, target), f"{'.'.join(parts)} -> {name}")
    return edges


def test_packages_import_only_the_packages_below_them():
    top = sorted(p.name for p in (REPO / "pipeline").glob("*.py"))
    assert top == ["__init__.py", "__main__.py"], top  # every module lives in its package
    packages = {p.name for p in (REPO / "pipeline").iterdir() if (p / "__init__.py").exists()}
    assert packages == set(LAYERS) - {"pipeline", "__main__"}, packages
    upward = [example for (source, target), example in _package_imports().items()
              if LAYERS.index(target) > LAYERS.index(source)]
    assert not upward, upward  # each would close a cycle or break the map's order
    # The map in pipeline/__init__.py names every package, in this order.
    code_map = (REPO / "pipeline" / "__init__.py").read_text()
    positions = [code_map.index(f"    {name}/") for name in LAYERS[1:-1]]
    assert positions == sorted(positions)
