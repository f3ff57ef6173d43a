"""Check results: a check's conformance verdict, what it measured and expected and why, and the
objectives judged on the same measurement."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import ParamSpec

from lab.verdict import ObjectiveResult, Prediction, Verdict, combine

__all__ = ["CheckResult", "ObjectiveResult", "Prediction", "Verdict", "combine", "never_crashes"]


@dataclass(frozen=True)
class CheckResult:
    """A check's verdict with what it measured, what it expected, and why it expected that.

    ``verdict`` is the conformance verdict (measured against what the configuration implies);
    ``objectives`` are the user's thresholds judged on the same measurement; ``overall``
    combines both, and is what result.json calls the check's ``verdict``.
    """

    name: str
    verdict: Verdict
    measured: str
    expected: str
    derivation: str
    details: tuple[str, ...] = field(default_factory=tuple)
    # Numbers behind ``measured`` for machine readers (seconds, ratios, counts).
    values: tuple[tuple[str, float], ...] = field(default_factory=tuple)
    objectives: tuple[ObjectiveResult, ...] = field(default_factory=tuple)
    label: str = ""             # the check as shown: its name and subject ("rate-limit /api/")

    @property
    def conformance(self) -> Verdict:
        return self.verdict

    @property
    def overall(self) -> Verdict:
        """Conformance and every objective combined."""
        return combine([self.verdict, *(o.verdict for o in self.objectives)])

    @property
    def shown(self) -> str:
        return self.label or self.name

    def value(self, key: str) -> float | None:
        """One of ``values`` by name, None when the check did not measure it."""
        return next((v for k, v in self.values if k == key), None)

    @property
    def passed(self) -> bool:
        return self.overall is Verdict.PASS


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
