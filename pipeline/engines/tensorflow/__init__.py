"""The TensorFlow backend (see pipeline.engines)."""
