"""Measurement probes (PROTOCOL.md sections 3-4), run by the training loop before a step.

A probe is one module of this package that declares `NAME` (its config key under
`probes.` and its record stream), `Config` (its settings class, kept in
pipeline/core/probe_settings.py so that the config layer need not import the probes) and
`Probe(probe_config, context)` (see `ProbeContext`). The registry finds every such
module, so a new probe is one new file plus its settings entry.

A probe is called with the step index; it measures on that step's training batch at
the current weights, in training mode, and returns a flat dict of JSON-able values.
Probes never change the model, the optimizer or any random state: they evaluate the
model with `stateless_call` on copies of the variable values. They are written once,
with `keras.ops`, on the engine's primitives (pipeline.engines).
"""

import importlib
import pkgutil

from pipeline.core.probe_settings import SETTINGS
from pipeline.inputs.tasks import task_of
from pipeline.nets.families import family_of
from pipeline.probes.stateless import BatchSource, ProbeContext, StatelessObjective


def _registry():
    modules = (importlib.import_module(f"{__name__}.{info.name}")
               for info in pkgutil.iter_modules(__path__))
    found = {module.NAME: module for module in modules if hasattr(module, "NAME")}
    for name, module in found.items():
        if SETTINGS.get(name) is not module.Config:
            raise ImportError(f"probe {name!r} ({module.__file__}) needs its settings class "
                              f"as SETTINGS[{name!r}] in pipeline/core/probe_settings.py")
    if set(SETTINGS) - set(found):
        raise ImportError(f"pipeline/core/probe_settings.py lists probe(s) without a module: "
                          f"{sorted(set(SETTINGS) - set(found))}")
    return dict(sorted(found.items()))


REGISTRY = _registry()  # name -> module, in name order (probes are independent)
__all__ = ["REGISTRY", "make_probes"]


def make_probes(config, engine, model, optimizer, arrays):
    """The probes `config.probes` switches on, sharing one batch source and objective."""
    task = task_of(arrays)
    context = ProbeContext(config, engine, model, optimizer, task,
                           StatelessObjective(engine, model, task, config.data.batch_size),
                           BatchSource(config, arrays, engine), family_of(config))
    return [module.Probe(getattr(config.probes, name), context)
            for name, module in REGISTRY.items() if getattr(config.probes, name).enabled]
