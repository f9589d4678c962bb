"""What differs between Keras' backends, behind one small interface (DESIGN.md "Backends").

An engine owns the devices (a `tf.distribute` strategy, or JAX's devices) and provides:
- `build(fn)`: create model and optimizer so their variables live where they should;
- `train_steps(model, optimizer, task, arrays, start_step)`: a function `(count) ->
  (losses, corrects)` that runs up to `count` optimizer updates on the next global
  batches of the stream from `start_step`,
  stopping after the first non-finite loss, and reads the metrics back once;
- `summed(fn, dataset)`: a function `(*args) ->` the sum of `fn(x, y, *args)` (a vector)
  over a data set, the batches split across devices (evaluation);
- for the probes, which are written once with `keras.ops` on top of it: `compile(fn)`,
  `values(variables)` (copies of the current values), `device_batch(batch)`,
  `value_and_grad(fn, values)`, `hessian_vector_product(fn, values, vector)` at
  arbitrary parameter values, and `optimizer_update(optimizer, variables)`: the
  optimizer's real update rule applied to copies.
Everything the engines share (the task's loss, `stateless_call`, the records) lives
outside them.
"""

import keras


def make_engine(config, runtime):
    """The engine of Keras' backend in this process."""
    if keras.backend.backend() == "jax":
        from pipeline.engines.jax import JaxEngine
        return JaxEngine(config, runtime)
    from pipeline.engines.tensorflow import TensorFlowEngine
    return TensorFlowEngine(config, runtime)
