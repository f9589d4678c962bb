"""BN Lab: a Keras 3 / TensorFlow reproduction of Santurkar et al. (2018),
*How Does Batch Normalization Help Optimization?*"""

__version__ = "0.1.0"
