"""What a load run must meet: a small typed record the CLI (and, later, the objectives
registry) fills, written into the k6 script as k6 thresholds.

    LoadThresholds(p95_s=0.2, error_rate=0.01).k6(("main",))
    -> {"http_req_duration{scenario:main}": ["p(95)<200"],
        "http_req_failed{scenario:main}": ["rate<0.01"]}

Each bound applies to every k6 scenario of a profile on its own (a conversation's logins are
judged apart from its reads), through k6's tag-filtered sub-metrics. ``max_dropped`` is the
lab's own bound: a run whose generator dropped more of its schedule than this is ``unknown``,
whatever the latency, because the requests that would have shown it were never sent.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from lab.errors import ConfigError
from lab.objectives import parse_ratio, parse_seconds

Seconds = Annotated[float, BeforeValidator(parse_seconds), Field(gt=0, le=3600)]
Share = Annotated[float, BeforeValidator(parse_ratio), Field(ge=0, le=1)]

# k6 evaluates thresholds on everything since the start: give a ramp a few seconds of data
# before a failed threshold may abort it.
ABORT_DELAY_S = 5


class LoadThresholds(BaseModel):
    """Latency and error bounds per request kind, and the share of the schedule that may drop."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    p95_s: Seconds | None = 0.2
    p99_s: Seconds | None = None
    error_rate: Share | None = 0.01
    abort_on_fail: bool = False
    max_dropped: Share = 0.0

    def k6(
        self,
        scenarios: tuple[str, ...],
        overrides: dict[str, float] | None = None,
    ) -> dict[str, list[Any]]:
        """The ``thresholds`` option of a k6 script; ``overrides``: scenario -> its p95 bound."""
        out: dict[str, list[Any]] = {}
        for scenario in scenarios:
            duration: list[Any] = []
            p95 = (overrides or {}).get(scenario, self.p95_s)
            if p95 is not None:
                duration.append(self._entry(f"p(95)<{_ms(p95)}"))
            if self.p99_s is not None:
                duration.append(self._entry(f"p(99)<{_ms(self.p99_s)}"))
            if duration:
                out[f"http_req_duration{{scenario:{scenario}}}"] = duration
            if self.error_rate is not None:
                out[f"http_req_failed{{scenario:{scenario}}}"] = [
                    self._entry(f"rate<{self.error_rate:g}")
                ]
        return out

    def _entry(self, expression: str) -> Any:
        if not self.abort_on_fail:
            return expression
        return {"threshold": expression, "abortOnFail": True, "delayAbortEval": f"{ABORT_DELAY_S}s"}

    def text(self) -> str:
        """The bounds in one line, for the table and the README's examples."""
        parts = []
        if self.p95_s is not None:
            parts.append(f"p95 < {_ms(self.p95_s)} ms")
        if self.p99_s is not None:
            parts.append(f"p99 < {_ms(self.p99_s)} ms")
        if self.error_rate is not None:
            parts.append(f"errors < {self.error_rate:.2%}")
        parts.append(f"dropped <= {self.max_dropped:.2%}")
        return ", ".join(parts)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g}"


def thresholds_from(values: dict[str, Any], source: str) -> LoadThresholds:
    """Validate thresholds given as a mapping (CLI options, a YAML file); errors name the field."""
    try:
        return LoadThresholds.model_validate(values)
    except ValidationError as exc:
        lines = [f"{source}: invalid thresholds"]
        for item in exc.errors():
            field = ".".join(str(p) for p in item["loc"]) or "(top level)"
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = (
                    f"unknown threshold (thresholds: {', '.join(LoadThresholds.model_fields)})"
                )
            lines.append(f"  {field}: {message}")
        raise ConfigError("\n".join(lines)) from None
