"""Nothing is written outside the run or the output but the project's cache folder
(pipeline.core.tool_homes): Keras' configuration, Matplotlib's and IPython's caches and
Jupyter's kernel connection files included."""

import os
import subprocess
import sys

import pytest

from conftest import REPO, SMOKE
from pipeline.core.tool_homes import FOLDERS


def _written(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.slow
def test_train_and_figures_write_nothing_in_the_home_folder_but_the_projects_cache(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    environment = {k: v for k, v in os.environ.items()
                   if k not in FOLDERS and k != "XDG_CACHE_HOME" and not k.startswith("JUPYTER")}
    environment["HOME"] = str(home)
    run, report = tmp_path / "run", tmp_path / "report"
    for command in (["train", str(SMOKE), "--set", "train.steps=4", "--workdir", str(run)],
                    ["figures", str(run), "--notebooks", "training", "--output", str(report)]):
        subprocess.run([sys.executable, "-m", "pipeline", *command], cwd=REPO, env=environment,
                       check=True, capture_output=True, timeout=300)
    outside = [path for path in _written(home)
               if path not in (".cache", ".cache/bnlab") and not path.startswith(".cache/bnlab/")]
    assert outside == []
    # Keras did write its configuration: into the project's folder, not ~/.keras.
    assert (home / ".cache" / "bnlab" / "keras" / "keras.json").exists()
    assert (report / "figures" / "training_accuracy.png").exists()
