"""The data: loading and generating data sets, the tf.data input pipeline (batch t is a
function of the seed and t), and the two tasks (classification, the DLN's regression).
Imports pipeline.core."""
