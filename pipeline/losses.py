"""The training objectives, shared by the training step and the probes."""

import keras
import tensorflow as tf


def example_losses(family, targets, outputs):
    """Per-example loss, shape (batch,): cross-entropy on logits, or for the DLN
    ("dln" family) the squared l2 error summed over outputs."""
    outputs = tf.cast(outputs, tf.float32)
    if family == "dln":
        return tf.reduce_sum(tf.square(outputs - targets), axis=-1)
    return keras.losses.sparse_categorical_crossentropy(targets, outputs, from_logits=True)


def batch_loss(family, targets, outputs, global_batch):
    """This batch's share of the global batch loss: mean over the global batch for
    classification, the plain sum for the DLN (PROTOCOL.md: loss summed over samples)."""
    total = tf.reduce_sum(example_losses(family, targets, outputs))
    return total if family == "dln" else total / global_batch


def correct_predictions(family, targets, outputs):
    """Number of correct top-1 predictions (0 for the regression task)."""
    if family == "dln":
        return tf.constant(0.0)
    predictions = tf.argmax(outputs, axis=-1, output_type=targets.dtype)
    return tf.reduce_sum(tf.cast(predictions == targets, tf.float32))
