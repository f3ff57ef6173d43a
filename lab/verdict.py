"""Verdicts and how they combine (fail beats unknown beats pass, as in Jepsen), and the two
layers every result carries:

- **conformance**: the system behaved as the configuration it runs implies (a check's own
  verdict, with the arithmetic that derived its expectation);
- **objectives**: what it did is good enough for the user (a threshold the user set, or the
  deployment checklist's stated target), judged on the same measurement.

A topology that obeys a bad configuration conforms and still fails its objectives.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"


_RANK = {Verdict.PASS: 0, Verdict.UNKNOWN: 1, Verdict.FAIL: 2}


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """The overall verdict: any fail fails, else any unknown is unknown, else pass."""
    worst = Verdict.PASS
    for verdict in verdicts:
        if _RANK[verdict] > _RANK[worst]:
            worst = verdict
    return worst


@dataclass(frozen=True)
class ObjectiveResult:
    """One objective judged on one check's measurement."""

    name: str                   # the objective's name in [objectives]
    verdict: Verdict
    threshold: str              # "<= 50 s", ">= 0.999"
    measured: str               # "1.095 s", "never ejected"
    value: float | None         # the measured number, None when there is none
    derivation: str             # where the measured number comes from


@dataclass(frozen=True)
class Prediction:
    """What the configuration in force implies for one objective, stated before any traffic."""

    objective: str
    check: str                  # the check's label the objective attaches to
    threshold: str
    predicted: str              # "up to 1.450 s", "never ejected"
    reachable: bool | None      # None: the configuration alone cannot tell (a machine's speed)
    arithmetic: str

    def line(self) -> str:
        """One line: the objective, the prediction with its arithmetic, and the conclusion."""
        conclusion = {True: "reachable", False: "UNREACHABLE",
                      None: "measured only"}[self.reachable]
        return (f"{self.objective} {self.threshold} ({self.check}): {self.predicted}: "
                f"{self.arithmetic}: {conclusion}")
