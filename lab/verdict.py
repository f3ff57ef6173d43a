"""Verdicts and how they combine (fail beats unknown beats pass, as in Jepsen), and the two
layers every result carries:

- **conformance**: the system behaved as the configuration it runs implies (a check's own
  verdict, with the arithmetic that derived its expectation);
- **objectives**: what it did is good enough for the user (a threshold the user set, or the
  deployment checklist's stated target), judged on the same measurement.

A topology that obeys a bad configuration conforms and still fails its objectives.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
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
class Measured:
    """What a run measured for a prediction: a value, or an interval around it (a share of n
    requests), and how to say it."""

    low: float
    high: float
    text: str

    @staticmethod
    def exactly(value: float, text: str) -> Measured:
        return Measured(value, value, text)


@dataclass(frozen=True)
class Prediction:
    """What the configuration in force implies for one objective, stated before any traffic."""

    objective: str
    check: str                  # the check's label the objective attaches to
    threshold: str
    predicted: str              # "up to 1.450 s", "never ejected"
    reachable: bool | None      # None: the configuration alone cannot tell (a machine's speed)
    arithmetic: str
    # The range the run's measurement must fall in for the prediction to hold, in the units of
    # the check's ``ObjectiveHook.measure`` (None: unbounded on that side; both None: a
    # statement the run cannot hold against a number, never compared). ``inf`` is "never".
    low: float | None = None
    high: float | None = None
    # After the run: whether the measurement fell in the range (None: not compared, or nothing
    # measured), and the measurement as compared.
    held: bool | None = None
    compared: str = ""

    @property
    def bounded(self) -> bool:
        return self.low is not None or self.high is not None

    def range_text(self) -> str:
        """The range as text: "<= 1.52", ">= 0.5", "0.2 to 0.5", "never"."""
        def shown(x: float) -> str:
            return "never" if math.isinf(x) else f"{x:.4g}"
        if self.low is not None and self.high is not None:
            return shown(self.low) if self.low == self.high else \
                f"{shown(self.low)} to {shown(self.high)}"
        if self.high is not None:
            return f"<= {shown(self.high)}"
        return f">= {shown(self.low)}" if self.low is not None else "-"

    def compare(self, measured: Measured | None) -> Prediction:
        """This prediction, held against what the run measured: it holds when the measurement's
        interval meets the predicted range (a share measured on n requests is an interval)."""
        if not self.bounded or measured is None:
            return replace(self, held=None, compared=measured.text if measured else "")
        low = -math.inf if self.low is None else self.low
        high = math.inf if self.high is None else self.high
        return replace(self, held=measured.low <= high and measured.high >= low,
                       compared=measured.text)

    def line(self) -> str:
        """One line: the objective, the prediction with its arithmetic, and the conclusion."""
        conclusion = {True: "reachable", False: "UNREACHABLE",
                      None: "measured only"}[self.reachable]
        line = (f"{self.objective} {self.threshold} ({self.check}): {self.predicted}: "
                f"{self.arithmetic}: {conclusion}")
        if self.held is not None:
            line += f"; {'held' if self.held else 'MISSED'}: measured {self.compared}"
        return line
