"""Check results and how they combine: fail beats unknown beats pass (as in Jepsen)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import wraps
from typing import ParamSpec


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"


_RANK = {Verdict.PASS: 0, Verdict.UNKNOWN: 1, Verdict.FAIL: 2}


@dataclass(frozen=True)
class CheckResult:
    """A check's verdict with what it measured, what it expected, and why it expected that."""

    name: str
    verdict: Verdict
    measured: str
    expected: str
    derivation: str
    details: tuple[str, ...] = field(default_factory=tuple)
    # Numbers behind ``measured`` for machine readers (seconds, ratios, counts).
    values: tuple[tuple[str, float], ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASS


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """The overall verdict: any fail fails, else any unknown is unknown, else pass."""
    worst = Verdict.PASS
    for verdict in verdicts:
        if _RANK[verdict] > _RANK[worst]:
            worst = verdict
    return worst


P = ParamSpec("P")


def never_crashes(name: str) -> Callable[[Callable[P, CheckResult]], Callable[P, CheckResult]]:
    """A check that raises yields ``unknown`` with the error, never a pass and never a crash."""

    def decorate(check: Callable[P, CheckResult]) -> Callable[P, CheckResult]:
        @wraps(check)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> CheckResult:
            try:
                return check(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any crash becomes "unknown"
                return CheckResult(
                    name=name,
                    verdict=Verdict.UNKNOWN,
                    measured="check crashed",
                    expected="-",
                    derivation=f"{type(exc).__name__}: {exc}",
                )

        return guarded

    return decorate
