"""The package's floor plan (packages import only those below them) and which commands
start a framework: only those that compute."""

import json
import re
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


# The code map of pipeline/__init__.py, bottom up (`pipeline` is its __init__, the
# version; `__main__` the command line).
LAYERS = ["pipeline", "core", "inputs", "engines", "nets", "probes", "training", "sweeps",
          "results", "speed", "__main__"]
FRAMEWORKS = ("tensorflow", "keras", "jax")


def allowed_imports():
    """{package: set of packages it may import}, read from the README's code map (its
    "imports" column): the floor plan as written is the one tested."""
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## The code map"):readme.index("## The building blocks")]
    allowed = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        package = cells[0].strip("`").rstrip("/").replace(".py", "")
        named = re.sub(r"\(.*?\)", "", cells[2])
        allowed[package] = {name.strip() for name in named.split(",")} & set(LAYERS)
    return allowed


def _resolve(parts, node):
    """The absolute module names an import node names, from module `parts`
    (("pipeline", "core", "runs")); relative imports resolved against the module's package."""
    import ast
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        package = list(parts[:-1])  # a module's package; an __init__'s is its own
        package = package[:len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    return [base] + [f"{base}.{a.name}" for a in node.names]


def _package_imports():
    """{(importing package, imported package or framework): 'module -> module'} over
    every import of pipeline's modules: those inside functions (a lazy import is an
    import) and relative ones included."""
    import ast
    edges = {}
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts  # ("pipeline", "core", "runs")
        source = parts[1] if len(parts) > 2 else parts[1].replace("__init__", "pipeline")
        for node in ast.walk(ast.parse(path.read_text())):
            for name in _resolve(parts, node):
                top = name.split(".")[0]
                if top in FRAMEWORKS:
                    edges.setdefault((source, top), f"{'.'.join(parts)} -> {name}")
                if top != "pipeline":
                    continue
                target = name.split(".")[1] if name.count(".") else "pipeline"
                if target in LAYERS and target != source:
                    edges.setdefault((source, target), f"{'.'.join(parts)} -> {name}")
    return edges


def test_each_package_imports_only_what_its_row_of_the_code_map_allows():
    top = sorted(p.name for p in (REPO / "pipeline").glob("*.py"))
    assert top == ["__init__.py", "__main__.py"], top  # every module lives in its package
    packages = {p.name for p in (REPO / "pipeline").iterdir() if (p / "__init__.py").exists()}
    assert packages == set(LAYERS) - {"pipeline", "__main__"}, packages
    allowed = allowed_imports()
    assert set(allowed) == set(LAYERS) - {"pipeline"}, allowed  # a row for each
    edges = _package_imports()
    forbidden = [example for (source, target), example in edges.items()
                 if target in LAYERS and target != "pipeline" and target not in allowed[source]]
    assert not forbidden, forbidden
    # No row lets a package import one that comes after it (which would close a cycle).
    assert all(LAYERS.index(t) < LAYERS.index(p) for p, ts in allowed.items() for t in ts)
    # Packages that read records or plan runs never start a framework, not even lazily
    # (core's backend chooser is the one place that starts them, for the commands that
    # compute).
    framework_imports = [example for (source, target), example in edges.items()
                         if target in FRAMEWORKS and source in ("sweeps", "results")]
    assert not framework_imports, framework_imports
    # The map in pipeline/__init__.py names every package, in this order.
    code_map = (REPO / "pipeline" / "__init__.py").read_text()
    positions = [code_map.index(f"    {name}/") for name in LAYERS[1:-1]]
    assert positions == sorted(positions)


def test_the_import_map_check_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    """The check above would fail on what it exists to catch: a lazy import of the
    engines in sweeps (the worker's, before it moved), and a relative one."""
    import ast
    lazy = ast.parse("def serve():\n    from pipeline import engines\n").body[0].body[0]
    assert "pipeline.engines" in _resolve(("pipeline", "sweeps", "worker"), lazy)
    relative = ast.parse("from ..training import train\n").body[0]
    assert _resolve(("pipeline", "sweeps", "worker"), relative)[0] == "pipeline.training"
    sibling = ast.parse("from . import plan\n").body[0]
    assert _resolve(("pipeline", "sweeps", "worker"), sibling) == ["pipeline.sweeps",
                                                                  "pipeline.sweeps.plan"]
    assert "engines" not in allowed_imports()["sweeps"]
