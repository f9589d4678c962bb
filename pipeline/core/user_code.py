"""A user's function named in a config (`model.factory`, `data.loader`) as
"package.module:function": imported from the working folder or the Python path, with one
clear error for each way the name can be wrong, and described for meta.json (which file,
its digest) so that a run records the code that built its network or data."""

import hashlib
import importlib
import os
import sys
from pathlib import Path

from pipeline.core.errors import InputError


class UserCodeError(InputError):
    """A function named in the config cannot be used; the message names the key."""


def split_function_path(key, path):
    """(module, function) of "package.module:function"; `UserCodeError` naming `key` if
    `path` is not of that form."""
    module, sep, name = (path or "").partition(":")
    if not sep or not module or not name.isidentifier() or any(
            not part.isidentifier() for part in module.split(".")):
        raise UserCodeError(f"{key}={path!r} is not a function's path; write it as "
                          "\"package.module:function\" (e.g. my_net:build for build() in "
                          "my_net.py in the working folder)")
    return module, name


def import_callable(key, path):
    """The function `path` ("package.module:function") names; `ConfigError` naming `key`
    if the module does not import, has no such attribute, or it is not callable."""
    module_name, name = split_function_path(key, path)
    # `python -m pipeline` puts the working folder on the path; a sweep's worker and a
    # notebook's kernel do not always, and the config says "from the working folder".
    here = os.getcwd()
    if here not in sys.path:
        sys.path.append(here)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            raise UserCodeError(f"{key}={path!r}: no module {error.name!r} in the working folder "
                              f"({here}) or on the Python path; run from the folder that "
                              "holds it, or add its folder to PYTHONPATH") from None
        raise UserCodeError(f"{key}={path!r}: importing {module_name} failed: {error}") from None
    except Exception as error:  # noqa: BLE001 - the user's module may raise anything
        raise UserCodeError(f"{key}={path!r}: importing {module_name} raised "
                          f"{type(error).__name__}: {error}") from None
    function = getattr(module, name, None)
    if function is None:
        raise UserCodeError(f"{key}={path!r}: {module_name} ({getattr(module, '__file__', '?')}) "
                          f"has no attribute {name!r}")
    if not callable(function):
        raise UserCodeError(f"{key}={path!r}: {module_name}.{name} is a "
                          f"{type(function).__name__}, not a function")
    return function


def describe_callable(function):
    """{"function", "file", "sha256"} of a user's function, for meta.json: a run's numbers
    depend on the code it names, which the config cannot seal."""
    module = sys.modules.get(function.__module__)
    source = getattr(module, "__file__", None)
    digest = None
    if source and Path(source).is_file():
        digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    return {"function": f"{function.__module__}:{function.__qualname__}", "file": source,
            "sha256": digest}
