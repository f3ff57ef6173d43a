"""Check results: a check's conformance verdict, what it measured and expected and why, and the
objectives judged on the same measurement."""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.verdict import Measured, ObjectiveResult, Prediction, Verdict, combine

__all__ = ["CheckResult", "Measured", "ObjectiveResult", "Prediction", "Verdict", "combine"]


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
