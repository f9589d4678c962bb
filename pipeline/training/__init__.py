"""Training a run: the loop (calls, probes, evaluations, checkpoints), resume, the
recorder, checkpoints, evaluation with recomputed BN statistics, the process runtime.
Imports every package below it: core, inputs, engines, nets, probes."""
