"""Which runs are the same experiment, and which checkpoints are a run's own: digests of
the settings that determine a run's numbers (PROTOCOL.md section 8, issue 42)."""

import dataclasses
import hashlib
import json


# Keys that do not change a run's numbers: what it is called, how its progress is shown,
# how many steps a compiled call runs (tested: the records are the same for any value),
# and the CPU threads (kept from a run's first start on resume, PROTOCOL.md section 10).
# Two runs that differ only in these are the same experiment.
NOT_THE_EXPERIMENT = ("description", "train.progress", "train.steps_per_call", "train.threads")
# Keys added after runs were made, left out while unset so that those runs' fingerprints
# (and their checkpoints' identity) stay what they were.
ADDED_UNSET = ("model.factory", "data.loader")


def experiment_fingerprint(config, ignore=()):
    """A hex digest of the settings that determine a run's numbers (seed included): of a
    `Config` or of a config as a dict (config.yaml read back). Equal for two runs of the
    same experiment, whatever their description or launcher settings; `ignore`: dotted
    keys left out besides."""
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    flat = {}

    def walk(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif prefix + key in ADDED_UNSET and value is None:
                continue
            elif prefix + key not in NOT_THE_EXPERIMENT + tuple(ignore):
                flat[prefix + key] = value
    walk(config)
    text = json.dumps(flat, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkpoint_identity(config):
    """The identity a run's checkpoints carry (pipeline.training.checkpoint): its
    experiment's fingerprint without train.steps, since the weights after step t do not
    depend on how long the run is to go on (a run resumed with more steps continues)."""
    return experiment_fingerprint(config, ignore=("train.steps",))
