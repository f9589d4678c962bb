"""The networks: the family registry (families.py: VGG and the deep linear network in
models.py, the ResNet, the MLP, a user's factory) and the normalization layers (BN,
noisy BN, l_p). Imports pipeline.core and the engines' kernels (pipeline.engines)."""
