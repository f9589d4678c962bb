"""Loss-landscape smoothness along the gradient (Section 3, Appendix A.2.2).

At step t with g = grad L(theta) on the step's batch and theta(eta) = theta - eta g, for
each eta of the grid: L(theta(eta)) (loss variation), ||grad L(theta(eta)) - g||_2
(gradient predictiveness) and ||grad L(theta(eta)) - g|| / ||eta g|| whose max over the
grid is the effective beta-smoothness. Every eta's values are kept (`per_eta`, each entry
with its `multiplier` of the LR and its absolute `eta`, so that no reader divides one by
the other), beside the band and the maximum over the grid. Each entry also carries
cos(grad L(theta(eta)), g); the record's `next_cosine` is that cosine at the grid's step
nearest the LR (in log scale): below 0, the step the optimizer is about to take
overshoots along this batch's gradient, the record's oscillation indicator (PROTOCOL.md
section 8). Cost: one forward+backward per grid point plus one for g, compiled once as a
loop over the grid.
"""


import numpy as np
from keras import ops

from pipeline.core.probe_settings import LandscapeConfig
from pipeline.probes.schedule import Schedule
from pipeline.probes.stateless import dot, global_norm, to_python

NAME = "landscape"
Config = LandscapeConfig  # its settings, the config section probes.landscape


class Probe:
    name = NAME

    def __init__(self, probe_config, context):
        self.schedule = Schedule.of(probe_config, context.config.train.steps)
        self.multipliers = [float(m) for m in
                            probe_config.multipliers or context.task.landscape_multipliers]
        self.etas = [m * context.config.optim.lr for m in self.multipliers]
        # The grid point whose cosine tells whether the LR's own step overshoots.
        self.nearest_lr = int(np.argmin(np.abs(np.log(self.multipliers))))
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
            cosine = dot(moved_grads, grads) / (global_norm(moved_grads) * global_norm(grads))
            # `where`, not a one-hot sum: an infinite loss must not turn the others to NaN.
            return tuple(ops.where(slots == index, value, column)
                         for value, column in zip((moved_loss, change, cosine), results))
        empty = ops.zeros([len(self.etas)], "float32")
        losses, changes, cosines = ops.fori_loop(0, len(self.etas), at_eta, (empty,) * 3)
        return loss, global_norm(grads), losses, changes, cosines

    def __call__(self, step):
        x, y = self.batches(step)
        loss, grad_norm, losses, changes, cosines = (
            np.asarray(t) for t in self._measure(x, y, *self.objective.values()))
        etas = np.array(self.etas)
        betas = changes / (etas * grad_norm)
        return to_python({
            "landscape/loss": loss, "landscape/grad_norm": grad_norm,
            "landscape/loss_min": losses.min(), "landscape/loss_max": losses.max(),
            "landscape/grad_change_min": changes.min(), "landscape/grad_change_max": changes.max(),
            "landscape/beta_max": betas.max(),
            "landscape/next_cosine": cosines[self.nearest_lr],
            "landscape/per_eta": [{"multiplier": multiplier, "eta": eta, "loss_at_eta": value,
                                   "grad_change": change, "beta": beta, "cosine": cosine}
                                  for multiplier, eta, value, change, beta, cosine in zip(
                                      self.multipliers, etas, losses, changes, betas, cosines)],
        })
