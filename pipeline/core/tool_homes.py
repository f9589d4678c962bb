"""Where the libraries BN Lab runs keep their own configuration and caches: one folder of
the project's, `$XDG_CACHE_HOME/bnlab` (else `~/.cache/bnlab`), beside the JAX compile
cache, instead of the user's home. Keras writes `~/.keras/keras.json` on its first
import, Matplotlib its font cache under `~/.cache/matplotlib` or `~/.config`, IPython (the
notebooks' kernels) `~/.ipython/profile_default/`, and Jupyter a connection file per
kernel under `~/.local/share/jupyter/runtime`, which a killed build leaves behind.

Each is set only where the user has not set it (their own choice wins), before anything
imports those libraries; child processes (sweep workers, notebook kernels) inherit it.
"""

import os
from pathlib import Path

# environment variable -> its folder under the project's cache
FOLDERS = {"KERAS_HOME": "keras", "MPLCONFIGDIR": "matplotlib", "IPYTHONDIR": "ipython",
           "JUPYTER_RUNTIME_DIR": "jupyter-runtime"}


def project_cache():
    """$XDG_CACHE_HOME/bnlab, else ~/.cache/bnlab (also the JAX compile cache's parent)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bnlab"


def confine():
    """Point each library's configuration and cache folder into `project_cache()`,
    unless the user chose one."""
    for variable, name in FOLDERS.items():
        os.environ.setdefault(variable, str(project_cache() / name))
