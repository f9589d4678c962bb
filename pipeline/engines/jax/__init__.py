"""The JAX backend (see pipeline.engines); TensorFlow only feeds it data (tf.data)."""
