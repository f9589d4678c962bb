"""Each probe's settings: the config section `probes.<name>`, one frozen dataclass per
probe, all starting with the schedule's fields (pipeline.probes.schedule). They live
here, apart from the probes themselves (which import Keras), so that the config layer
imports nothing above it; a new probe is its module in pipeline/probes plus its entry
in `SETTINGS` (the probe registry checks that the two agree).
"""

from dataclasses import dataclass
from typing import List, Optional

SCHEDULES = ("every", "log")


@dataclass(frozen=True)
class ScheduleConfig:
    """The fields every probe's settings start with."""
    enabled: bool = False
    every: int = 100
    schedule: str = "every"     # "every" or "log" (see pipeline.probes.schedule)
    per_decade: int = 10        # log: steps a decade


@dataclass(frozen=True)
class CurvatureConfig(ScheduleConfig):
    every: int = 500
    iterations: int = 20            # at most this many Lanczos steps (Hessian-vector products)
    # ... stopping once the eigenvalue changes by less than this fraction in one step
    tolerance: float = 1e-3


@dataclass(frozen=True)
class DistributionsConfig(ScheduleConfig):
    every: int = 100
    layers: Optional[List[int]] = None  # 1-based weight-layer indices; None = task default
    sample_size: int = 256          # raw activation values kept per layer per record


@dataclass(frozen=True)
class IcsConfig(ScheduleConfig):
    every: int = 100
    layers: Optional[List[int]] = None  # 1-based weight-layer indices; None = task default


@dataclass(frozen=True)
class LandscapeConfig(ScheduleConfig):
    every: int = 100
    # step sizes as multiples of optim.lr; None = the task's default (VGG {0.5,1,2,4},
    # DLN a log grid over [0.01, 30])
    multipliers: Optional[List[float]] = None


# probe name (its config key and record stream) -> its settings, in name order
SETTINGS = {"curvature": CurvatureConfig, "distributions": DistributionsConfig,
            "ics": IcsConfig, "landscape": LandscapeConfig}
