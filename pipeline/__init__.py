"""BN Lab: a Keras 3 / TensorFlow reproduction of Santurkar et al. (2018),
*How Does Batch Normalization Help Optimization?*

Code map (each package imports only those before it; tests/test_imports.py checks it):
    core/       config, errors, backend chooser, console, signals, run directories
    inputs/     data sets, the tf.data input pipeline, the tasks (classification, DLN)
    engines/    one package per Keras backend: compiled steps, kernels, process settings
    nets/       the family registry (VGG, DLN, ResNet, MLP, a user's factory), norm layers
    probes/     ICS, loss landscape, curvature, activation distributions
    training/   the training loop, resume, checkpoints, evaluation, runtime
    sweeps/     grids and plans of runs, local and Slurm launchers
    results/    records to frames, measures, rules, the claims table, plots, report
    speed/      make bench
    __main__    the command line (python -m pipeline)
"""

__version__ = "0.1.0"
