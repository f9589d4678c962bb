"""Loss-landscape smoothness along the gradient (Section 3, Appendix A.2.2).

At step t with g = grad L(theta) on the step's batch and theta(eta) = theta - eta g, for
each eta of the grid: L(theta(eta)) (loss variation), ||grad L(theta(eta)) - g||_2
(gradient predictiveness) and ||grad L(theta(eta)) - g|| / ||eta g|| whose max over the
grid is the effective beta-smoothness. Cost: one forward+backward per grid point plus
one for g, compiled once.
"""

import numpy as np
import tensorflow as tf

from pipeline.probes.stateless import global_norm, to_python

# Step sizes as multiples of the learning rate: VGG {0.05..0.4} at LR 0.1 in the paper's
# figures; for the DLN a log grid over [1/100, 30] x LR.
DEFAULT_MULTIPLIERS = {"vgg": [0.5, 1.0, 2.0, 4.0], "dln": np.geomspace(0.01, 30, 8).tolist()}


class LandscapeProbe:
    name = "landscape"

    def __init__(self, probe_config, config, objective, batches):
        self.every = probe_config.every
        multipliers = probe_config.multipliers or DEFAULT_MULTIPLIERS[config.model.family]
        self.etas = [float(m) * config.optim.lr for m in multipliers]
        self.objective, self.batches = objective, batches
        self._measure = tf.function(self._measure_graph)

    def _measure_graph(self, x, y, trainable, non_trainable):
        loss, grads = self.objective.loss_and_grads(trainable, non_trainable, x, y)
        losses, changes = [], []
        for eta in self.etas:  # unrolled: the grid is small and fixed
            moved = [w - eta * g for w, g in zip(trainable, grads)]
            moved_loss, moved_grads = self.objective.loss_and_grads(moved, non_trainable, x, y)
            losses.append(moved_loss)
            changes.append(global_norm([a - b for a, b in zip(moved_grads, grads)]))
        return loss, global_norm(grads), tf.stack(losses), tf.stack(changes)

    def __call__(self, step):
        x, y = self.batches(step)
        loss, grad_norm, losses, changes = (
            t.numpy() for t in self._measure(x, y, *self.objective.values()))
        etas = np.array(self.etas)
        betas = changes / (etas * grad_norm)
        return to_python({
            "landscape/loss": loss, "landscape/grad_norm": grad_norm,
            "landscape/loss_min": losses.min(), "landscape/loss_max": losses.max(),
            "landscape/grad_change_min": changes.min(), "landscape/grad_change_max": changes.max(),
            "landscape/beta_max": betas.max(),
            "landscape/etas": etas, "landscape/losses": losses,
            "landscape/grad_changes": changes, "landscape/betas": betas,
        })
