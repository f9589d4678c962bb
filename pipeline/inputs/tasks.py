"""The two learning tasks, each in one place: its loss, its metrics and the step sizes
its landscape probe uses. Written with `keras.ops`, so the same code runs in the
training step, the evaluation and the probes on either backend. The data decide the
task (`task_of`), whatever network learns it:

- `classification` (integer labels): mean cross-entropy of logits over the global
  batch, accuracy. The paper's VGG experiments.
- `regression` (real-valued targets): the squared l2 error *summed* over the samples
  (PROTOCOL.md section 1), no accuracy. The paper's deep linear network.
"""

import keras
import numpy as np
from keras import ops


class Classification:
    kind = "classification"
    # Landscape step sizes as multiples of the LR: the paper's {0.5, 1, 2, 4} ({0.05..0.4}
    # at LR 0.1), extended down to 1/16 so that the effective beta (its maximum over the
    # grid, usually at the smallest step) measures the curvature rather than the grid:
    # BN's top Hessian eigenvalue times 0.05 is ~2.5 on the demo, far from the linear
    # regime; times 0.00625 it is ~0.3. PROTOCOL.md section 4.
    landscape_multipliers = [0.0625, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0]

    def example_losses(self, targets, outputs):
        """Per-example cross-entropy on logits, shape (batch,)."""
        return keras.losses.sparse_categorical_crossentropy(
            targets, ops.cast(outputs, "float32"), from_logits=True)

    def batch_loss(self, targets, outputs, global_batch):
        """This batch's share of the global batch loss (mean over the global batch)."""
        return ops.sum(self.example_losses(targets, outputs)) / global_batch

    def correct_predictions(self, targets, outputs):
        """Number of correct top-1 predictions (float32 scalar)."""
        predicted = ops.cast(ops.argmax(outputs, axis=-1), "int32")
        return ops.sum(ops.cast(ops.equal(predicted, ops.cast(targets, "int32")), "float32"))

    def metrics(self, loss_sum, correct, count, prefix):
        """Records from sums over `count` examples: mean loss and accuracy."""
        return {f"{prefix}loss": loss_sum / count, f"{prefix}accuracy": correct / count}

    def train_metrics(self, loss, correct, global_batch):
        return {"train/loss": loss, "train/accuracy": correct / global_batch}

    def reference_levels(self, arrays):
        return None  # no plateau structure to record


class Regression:
    kind = "regression"
    # A log grid over [1/100, 30] x LR.
    landscape_multipliers = np.geomspace(0.01, 30, 8).tolist()

    def example_losses(self, targets, outputs):
        """Squared l2 error summed over the outputs, shape (batch,)."""
        return ops.sum(ops.square(ops.cast(outputs, "float32") - targets), axis=-1)

    def batch_loss(self, targets, outputs, global_batch):
        return ops.sum(self.example_losses(targets, outputs))  # summed, not averaged

    def correct_predictions(self, targets, outputs):
        return ops.zeros((), "float32")

    def metrics(self, loss_sum, correct, count, prefix):
        return {f"{prefix}loss": loss_sum}  # summed, as in training

    def train_metrics(self, loss, correct, global_batch):
        return {"train/loss": loss}

    def reference_levels(self, arrays):
        """The best rank-k fit errors of the training data, k = 0 .. dim - 1, in the
        loss's units (summed): a linear network learns A's singular directions one at a
        time, so its loss descends in plateaus at these levels. With targets A x exactly,
        rank-k error = the sum of the dim - k smallest eigenvalues of Y^T Y."""
        y = np.asarray(arrays.y_train, np.float64)
        eigenvalues = np.sort(np.linalg.eigvalsh(y.T @ y))  # ascending
        return [float(eigenvalues[:len(eigenvalues) - k].sum()) for k in range(len(eigenvalues))]


TASKS = {task.kind: task for task in (Classification(), Regression())}


def task_of(arrays):
    """The task of a data set (`pipeline.inputs.data.Arrays`): a classification of
    `num_classes` classes, or a regression where it has none (0)."""
    return TASKS["classification" if arrays.num_classes else "regression"]
