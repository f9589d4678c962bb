"""Loss-landscape smoothness along the gradient (Section 3, Appendix A.2.2).

At step t with g = grad L(theta) on the step's batch and theta(eta) = theta - eta g, for
each eta of the grid: L(theta(eta)) (loss variation), ||grad L(theta(eta)) - g||_2
(gradient predictiveness) and ||grad L(theta(eta)) - g|| / ||eta g|| whose max over the
grid is the effective beta-smoothness. Every eta's values are kept (`per_eta`, each entry
with its `eta`), beside the band and the maximum over the grid. Cost: one forward+backward per grid point plus
one for g, compiled once as a loop over the grid.
"""


import numpy as np
from keras import ops

from pipeline.core.probe_settings import LandscapeConfig
from pipeline.probes.schedule import Schedule
from pipeline.probes.stateless import global_norm, to_python

NAME = "landscape"
Config = LandscapeConfig  # its settings, the config section probes.landscape


class Probe:
    name = NAME

    def __init__(self, probe_config, context):
        self.schedule = Schedule.of(probe_config, context.config.train.steps)
        multipliers = probe_config.multipliers or context.task.landscape_multipliers
        self.etas = [float(m) * context.config.optim.lr for m in multipliers]
        self.objective, self.batches = context.objective, context.batches
        self._measure = context.engine.compile(self._measure_graph)

    def _measure_graph(self, x, y, trainable, non_trainable):
        loss, grads = self.objective.loss_and_grads(trainable, non_trainable, x, y)
        etas = ops.convert_to_tensor(self.etas, "float32")
        slots = ops.arange(len(self.etas))

        # A compiled loop over the grid, not one traced copy of forward+backward per
        # eta: tracing (XLA compiling, on JAX) then costs two passes whatever the grid.
        def at_eta(index, results):
            eta = etas[index]
            moved = [w - eta * g for w, g in zip(trainable, grads)]
            moved_loss, moved_grads = self.objective.loss_and_grads(moved, non_trainable, x, y)
            change = global_norm([a - b for a, b in zip(moved_grads, grads)])
            # `where`, not a one-hot sum: an infinite loss must not turn the others to NaN.
            return tuple(ops.where(slots == index, value, column)
                         for value, column in zip((moved_loss, change), results))
        empty = ops.zeros([len(self.etas)], "float32")
        losses, changes = ops.fori_loop(0, len(self.etas), at_eta, (empty, empty))
        return loss, global_norm(grads), losses, changes

    def __call__(self, step):
        x, y = self.batches(step)
        loss, grad_norm, losses, changes = (
            np.asarray(t) for t in self._measure(x, y, *self.objective.values()))
        etas = np.array(self.etas)
        betas = changes / (etas * grad_norm)
        return to_python({
            "landscape/loss": loss, "landscape/grad_norm": grad_norm,
            "landscape/loss_min": losses.min(), "landscape/loss_max": losses.max(),
            "landscape/grad_change_min": changes.min(), "landscape/grad_change_max": changes.max(),
            "landscape/beta_max": betas.max(),
            "landscape/per_eta": [{"eta": eta, "loss_at_eta": value, "grad_change": change,
                                   "beta": beta}
                                  for eta, value, change, beta in zip(etas, losses, changes, betas)],
        })
