"""What noisy BN's noise costs at least on TensorFlow's kernels (`make bench`): the
draws alone, and the Philox words under them. Each function returns an argument-free
compiled callable for the benchmark to time."""

import tensorflow as tf

from pipeline.engines.tensorflow.kernels import philox_uniform


def noise_draws(noisy_layers, shapes, sample_shift_noise):
    """One step's Algorithm-1 draws for each noisy layer at its output `shape`, by
    `sample_shift_noise` (pipeline.nets.layers', handed in: the layers import the engines, so
    an engine importing the layers would close a cycle)."""
    @tf.function
    def draw():
        total = tf.constant(0.0)
        for layer, shape in zip(noisy_layers, shapes):
            scale, shift = sample_shift_noise(shape, layer.axis, layer.seed_generator, layer.n_mu,
                                              layer.n_sigma, layer.r_mu, layer.r_sigma, tf.float32)
            total += scale[(0,) * len(shape)] + shift[(0,) * len(shape)]
        return total
    return lambda: float(draw())


def random_words(count):
    """`count` uniform floats (one 32-bit Philox word each) and nothing else: noisy BN
    needs two per activation (a uniform shift, a normal scale)."""
    seed = tf.constant([0, 1], tf.int64)

    @tf.function
    def draw():
        return philox_uniform(tf.constant([count]), seed, tf.float32)[0]
    return lambda: float(draw())
