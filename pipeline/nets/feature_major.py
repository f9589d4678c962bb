"""Feature-major dense activations, (units, batch), for the deep linear network.

Why: XLA's CPU dot is several times faster when its output's minor (last, contiguous)
axis is long. The DLN's products are (1000, 10) @ (10, 10); written batch-major they
produce rows of 10 numbers, feature-major rows of 1,000. Measured on the project's
2-core machine (JAX 0.10, one thread, 500 steps per call): a 25-layer DLN step took
1,500 us batch-major against 360 us feature-major, with BatchNorm 2,760 against 880.
Transposing around each layer does not help: XLA folds the transposes back into the
dot, and without a barrier around the transposes into and out of the network XLA
lays the activations out batch-major again. So the DLN transposes its input once,
keeps every layer feature-major, and transposes its output back; the model's inputs
and outputs stay batch-major.

`FeatureMajorDense` keeps Dense's kernel, (input_dim, units), made and initialized by
Dense's own code, so a seed gives the same weights as a batch-major Dense, and probes,
checkpoints and `weight_layers` see a Dense. Norm layers take `axis=0`.
"""

import keras
from keras import ops
from keras.layers import InputSpec

from pipeline.engines import kernels


@keras.saving.register_keras_serializable(package="pipeline")
class FeatureMajorDense(keras.layers.Dense):
    """Dense on (input_dim, batch) inputs: kernel^T @ x (+ bias), (units, batch)."""

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"FeatureMajorDense takes (features, batch) inputs; received "
                             f"shape {input_shape}")
        super().build((input_shape[1], input_shape[0]))  # Dense reads the last axis
        self.input_spec = InputSpec(ndim=2, axes={0: input_shape[0]})

    def call(self, inputs, training=None):
        outputs = ops.matmul(ops.transpose(self.kernel), inputs)
        if self.bias is not None:
            outputs = outputs + ops.expand_dims(self.bias, 1)
        return outputs

    def compute_output_shape(self, input_shape):
        return (self.units, input_shape[1])


@keras.saving.register_keras_serializable(package="pipeline")
class Transpose(keras.layers.Layer):
    """Swaps the two axes of a 2-D tensor: batch-major <-> feature-major. Each side is
    pinned to its own memory layout (the engine's `layout_barrier`), so that the
    transpose moves the data instead of XLA relaying the activations out batch-major."""

    def call(self, inputs):
        barrier = kernels().layout_barrier
        return barrier(ops.transpose(barrier(inputs)))

    def compute_output_shape(self, input_shape):
        return tuple(reversed(input_shape))


def batch_axis(tensor):
    """The batch axis of a symbolic Keras tensor: the one axis of unknown size (0 for a
    batch-major tensor, 1 for a feature-major one)."""
    unknown = [axis for axis, size in enumerate(tensor.shape) if size is None]
    return unknown[0] if len(unknown) == 1 else 0


def batch_major(tensor):
    """`tensor` (symbolic) with its batch on axis 0: as it is, or transposed back."""
    return tensor if batch_axis(tensor) == 0 else Transpose()(tensor)
