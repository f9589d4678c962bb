"""The networks: VGG and the deep linear network, and the normalization layers (BN,
noisy BN, l_p). Imports pipeline.core and the engines' kernels (pipeline.engines)."""
