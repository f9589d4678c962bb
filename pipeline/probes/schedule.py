"""When a probe measures: its schedule (the settings are in pipeline.core.probe_settings).

`every`: steps 0, every, 2 every, ... . `log`: the same steps plus log-spaced ones,
`per_decade` a decade (1, 2, 3, ..., 10, 13, 16, 20, 25, 32, ...), so a probe is dense
where the dynamics are (the first steps, where a BN network's loss falls by orders of
magnitude) and at the regular cadence later; Cockpit's `logarithmic` schedule, with
gaps capped at `every`. The steps a run probes are recorded in its meta.json.
"""

import bisect

def schedule_steps(config, total_steps):
    """Sorted steps in [0, total_steps) at which a probe with `config` measures."""
    steps = set(range(0, total_steps, config.every))
    if config.schedule == "log":
        k = 0
        while (step := round(10 ** (k / config.per_decade))) < total_steps:
            steps.add(step)
            k += 1
    return sorted(steps)


class Schedule:
    """A probe's steps, asked by the training loop before each step and call."""

    def __init__(self, steps):
        self.steps = sorted(set(steps))

    @classmethod
    def of(cls, config, total_steps):
        return cls(schedule_steps(config, total_steps))

    def due(self, step):
        index = bisect.bisect_left(self.steps, step)
        return index < len(self.steps) and self.steps[index] == step

    def next_after(self, step):
        """The first scheduled step after `step`, or None."""
        index = bisect.bisect_right(self.steps, step)
        return self.steps[index] if index < len(self.steps) else None
