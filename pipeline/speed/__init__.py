"""`make bench`: the training loop's speed against its floor on each backend, the input
pipeline, time to first step, probe costs, and sweeps' wall time. Imports everything it
measures (training, nets, probes, engines, sweeps)."""
