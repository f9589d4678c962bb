"""Measurement probes (PROTOCOL.md sections 3-4), run by the training loop before a step.

Each probe has a `name` (its record stream), an `every` (cadence in steps) and is called
with the step index; it measures on that step's training batch at the current weights,
in training mode, and returns a flat dict of JSON-able values. Probes never change the
model, the optimizer or any random state: they evaluate the model with
`stateless_call` on copies of the variable values.
"""

from pipeline.probes.curvature import CurvatureProbe
from pipeline.probes.distributions import DistributionsProbe
from pipeline.probes.ics import ICSProbe
from pipeline.probes.landscape import LandscapeProbe
from pipeline.probes.stateless import BatchSource, StatelessObjective

__all__ = ["make_probes", "LandscapeProbe", "ICSProbe", "DistributionsProbe", "CurvatureProbe"]


def make_probes(config, model, optimizer, arrays):
    """The probes `config.probes` switches on, sharing one batch source and objective."""
    batches = BatchSource(config, arrays)
    objective = StatelessObjective(model, config.model.family, config.data.batch_size)
    p = config.probes
    probes = []
    if p.landscape.enabled:
        probes.append(LandscapeProbe(p.landscape, config, objective, batches))
    if p.ics.enabled:
        probes.append(ICSProbe(p.ics, config, objective, optimizer, batches))
    if p.distributions.enabled:
        probes.append(DistributionsProbe(p.distributions, config, model, batches))
    if p.curvature.enabled:
        probes.append(CurvatureProbe(p.curvature, config, objective, batches))
    return probes
