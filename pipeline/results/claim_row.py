"""One row of the claims table, typed: what is claimed, what was found, and the numbers
behind it. `pipeline.results.claims` builds the rows; `pipeline.results.claims_format`
renders each one for the text table, the HTML report (through the same `details`) and
JSON (`ClaimRow.to_json`)."""

import dataclasses
import math
from typing import Optional

import numpy as np

@dataclasses.dataclass(frozen=True)
class ClaimRow:
    """A claim read at one learning rate (and one probed layer, for ICS).

    `kind` names the claim's kind (pipeline.results.claim_kinds), which decides what the
    `measured` numbers are and prints them: for a "probe" row the per-bin ratios
    (`matched_bins`), the `coverage` of each loss bin, the paper's statistic as the paper
    reads it (`paper_statistic`) and, for the landscape, `per_eta`; for "trains like BN"
    the median steps to 90 % per variant (`steps_medians`), the verdict of each part
    (`parts`) and the test accuracies; for "paired" the seed `pairs` and the medians
    `shown` beside; for "run level" the variant's and reference's medians. A row whose
    runs or records are missing has kind "" and says which `command` makes them.

    `verdict` is the ledger's: `rule_verdict` (the rule on our runs) where the paper's own
    value passes the rule (`paper_verdict`), "beyond the paper" where it does not or the
    paper has none, "check passed" / "check failed" for a manipulation check."""
    key: str
    claim: str                      # PROTOCOL.md's words (", layer #k" for a probed layer)
    statistic: str                  # what is measured per run or record
    variant: str                    # norm of the numerator
    reference: Optional[str]        # norm of the denominator; None: compared with 1
    paper: str                      # the paper's values, PROTOCOL.md section 6
    rule: str                       # the text of the rule that decides the verdict
    headline: bool                  # one of the paper's headline claims
    verdict: str                    # reproduced / not reproduced / inconclusive / beyond ...
    kind: str = ""                  # the claim's kind, or "" (runs or records missing)
    lr: Optional[float] = None
    layer: Optional[int] = None     # the probed layer (1-based weight-layer index)
    seeds: Optional[int] = None     # seeds per variant (the fewer of the two)
    ratio: Optional[float] = None   # the statistic: variant / reference, or its value
    interval: Optional[list] = None  # its 95 % interval [low, high]
    p_value: Optional[float] = None
    note: Optional[str] = None      # why a row is undecided, or bins against its verdict
    command: Optional[str] = None   # what makes the missing runs or records
    paper_value: object = None      # the paper's value of the row's statistic, or None
    paper_source: str = ""          # its figure and panel
    paper_verdict: str = ""         # the rule's verdict on the paper's value
    rule_verdict: Optional[str] = None  # the rule's verdict on our runs
    check: bool = False             # a manipulation check, not a finding
    measured: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, kind, values):
        """The row of `kind` from the dict `values`: the fields of the row by name, the
        rest as its `measured` numbers."""
        names = {field.name for field in dataclasses.fields(cls)} - {"kind", "measured"}
        return cls(kind=kind, **{k: v for k, v in values.items() if k in names},
                   measured={k: v for k, v in values.items() if k not in names})

    def to_json(self):
        """The row as one flat object of plain values (NaN and infinities as None), every
        field present, `measured`'s numbers beside them: ready for other tools."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name != "measured"}
        return _plain({**fields, **self.measured})


def _plain(value):
    """A JSON-ready copy: NumPy scalars as Python numbers, NaN and infinities as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
