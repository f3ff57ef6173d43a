"""Objectives: the thresholds a topology must meet to be good enough for its users.

Conformance asks whether the system did what its configuration implies; objectives ask
whether that is good enough. They come, later ones overriding earlier ones, from the
deployment checklist's stated targets (the defaults below), the ``[objectives]`` table of
``lab.toml``, a scenario's ``objectives:`` block, and ``lab run --objective NAME=VALUE``::

    [objectives]
    ejection = "50s"            # a failed backend out of rotation within 50 s
    availability = "99.9%"
    health_latency = "5ms"      # p50 of /health through NGINX, healthy steady state
    [objectives.rate_limits]
    "/api/auth/" = "10r/s burst=5"
    [objectives.security_headers]
    "X-Frame-Options" = "DENY"  # the value every answer must carry; "*": any value; "off"

Values carry their unit: durations are seconds or a string with ms, s, m, h, d or y;
ratios a number in (0, 1] or a percentage. Each objective states on its own field (``Stated``)
where its default comes from (the checklist, or the lab's choice where the checklist states
none) and how its threshold reads; a field without one is refused at import, and the tables
that list them (``DEFAULT_SOURCE``, ``OBJECTIVE_NAMES``, ``MERGED``, ``threshold_text``) are
derived from the fields. Why each default is what it is: docs/objectives.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

from lab.config import config_path, read_toml
from lab.errors import ConfigError
from lab.units import text_seconds

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "y": 31_536_000.0}


def parse_seconds(value: Any) -> Any:
    """A duration in seconds from a number (seconds) or "500ms", "50s", "1m", "365d", "1y"."""
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")  # noqa: TRY004 - pydantic reports ValueError only
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration (a number and a unit: 50s, 5ms)")
        number, unit = match.groups()
        if unit not in _UNITS and unit != "":
            raise ValueError(f"unknown unit {unit!r} in {value!r} (units: {', '.join(_UNITS)})")
        return float(number) * _UNITS.get(unit, 1.0)
    return value


def parse_ratio(value: Any) -> Any:
    """A ratio in (0, 1] from a number or a percentage ("99.9%")."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            try:
                return float(text[:-1]) / 100
            except ValueError:
                raise ValueError(f"{value!r} is not a percentage") from None
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a ratio (0.999 or 99.9%)") from None
    return value


Source = Literal["checklist", "lab default"]


@dataclass(frozen=True)
class Stated:
    """What an objective states on its own field: where its default comes from (the deployment
    checklist's stated target, or the lab's own choice where the checklist states none; the
    reason is in docs/objectives.md) and how its threshold reads as a comparison."""

    source: Source
    # (the objective's value, every objective's value) -> "<= 50 s"; None: not an objective of
    # its own but a setting another one's threshold reads (health_latency_percentile).
    threshold: Callable[[Any, Any], str] | None
    # An objective that is a table (an override sets some keys and keeps the others): what a
    # key names, and an --objective that sets one.
    table: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if self.source not in get_args(Source):
            raise TypeError(f"objective source {self.source!r} is not one of "
                            f"{', '.join(get_args(Source))}")


def _at_most_s(value: float, _: Any) -> str:
    return f"<= {text_seconds(value)}"


def _at_most(value: int, _: Any) -> str:
    return f"<= {value}"


Seconds = Annotated[float, BeforeValidator(parse_seconds), Field(ge=0)]
Ratio = Annotated[float, BeforeValidator(parse_ratio), Field(gt=0, le=1)]
Count = Annotated[int, Field(ge=0)]

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*r/s(?:\s+burst\s*=\s*(\d+))?\s*$")


class RateLimitObjective(BaseModel):
    """At most ``rate_per_s`` requests per second per client, after a burst of ``burst``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate_per_s: Annotated[float, Field(gt=0)]
    burst: Annotated[int, Field(ge=0)] = 0

    def text(self) -> str:
        return f"{self.rate_per_s:g} r/s" + (f" burst {self.burst}" if self.burst else "")


def _rate_limit(value: Any) -> Any:
    if isinstance(value, str):
        match = _RATE.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a rate limit (10r/s, or 10r/s burst=5)")
        return {"rate_per_s": float(match.group(1)), "burst": int(match.group(2) or 0)}
    return value


RateLimit = Annotated[RateLimitObjective, BeforeValidator(_rate_limit)]


ANY_VALUE = "*"     # a required header whose value may be anything (present, not empty)
OFF = "off"         # a header in a merged table that is no longer required


def _names(value: Any) -> Any:
    """A tuple of names from a list or a comma-separated string (``--objective`` gives one)."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


Names = Annotated[tuple[str, ...], BeforeValidator(_names)]


class HealthContractObjective(BaseModel):
    """Which health endpoints answer 200 whatever the dependencies do, and which answer 503
    naming the failed dependency while one is down (200 when all is well)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    always_ok: Names = ("/health", "/health/live")
    unready_in_outage: Names = ("/health/ready", "/health/detailed")

    def text(self) -> str:
        return (f"{', '.join(self.always_ok) or 'none'} 200 always; "
                f"{', '.join(self.unready_in_outage) or 'none'} 503 naming the dependency "
                "during its outage")


def _checklist_security_headers() -> dict[str, str]:
    return {"X-Frame-Options": "SAMEORIGIN", "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": ANY_VALUE}


def _checklist_rate_limits() -> dict[str, RateLimitObjective]:
    return {"/api/auth/": RateLimitObjective(rate_per_s=10, burst=5),
            "/api/": RateLimitObjective(rate_per_s=100),
            "/webhooks/": RateLimitObjective(rate_per_s=50)}


class Objectives(BaseModel):
    """The thresholds in force; defaults are the checklist's targets (docs/objectives.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ejection: Annotated[Seconds, Stated("checklist", _at_most_s)] = Field(
        50.0, description="a failed backend out of rotation within (s)")
    readmission: Annotated[Seconds, Stated("checklist", _at_most_s)] = Field(
        30.0, description="a recovered backend back in rotation within (s)")
    availability: Annotated[Ratio, Stated("checklist", lambda x, _: f">= {x:g}")] = Field(
        0.999, description="share of client requests answered ok")
    health_latency: Annotated[Seconds, Stated(
        "checklist", lambda x, v: f"p{v.health_latency_percentile:g} < {text_seconds(x)}")] = Field(
        0.005, description="/health through NGINX, healthy steady state")
    health_latency_percentile: Annotated[float, Field(gt=0, lt=100),
                                         Stated("lab default", None)] = Field(
        50.0, description="the percentile health_latency judges")
    failing_latency: Annotated[Seconds, Stated("lab default",
                                               lambda x, _: f"p99 <= {text_seconds(x)}")] = Field(
        6.0, description="p99 of client latency while a backend fails")
    duplicate_job_runs: Annotated[Count, Stated("checklist", _at_most)] = Field(
        0, description="overlapping runs or ticks run twice")
    lost_writes: Annotated[Count, Stated("lab default", _at_most)] = Field(
        0, description="acknowledged writes missing afterwards")
    pool_server_connections: Annotated[Count, Stated("checklist", _at_most)] = Field(
        30, description="most server connections PostgreSQL sees")
    pool_clients: Annotated[Count, Stated("checklist", lambda x, _: f">= {x}")] = Field(
        300, description="clients the pool serves at once without error")
    rate_limits: Annotated[dict[str, RateLimit], Stated(
        "checklist", lambda x, _: "; ".join(f"{loc} <= {r.text()}" for loc, r in x.items()),
        table=("location", "rate_limits./api/auth/=10r/s burst=5"))] = Field(
        default_factory=_checklist_rate_limits, description="per location prefix")
    hsts_max_age: Annotated[Seconds, Stated("checklist", lambda x, _: f">= {x:.0f} s")] = Field(
        31_536_000.0, description="HSTS max-age on every HTTPS answer")
    dependency_recovery: Annotated[Seconds, Stated("lab default", _at_most_s)] = Field(
        30.0, description="errors end within this of a dependency's return")
    lock_takeover: Annotated[Seconds, Stated("lab default", _at_most_s)] = Field(
        30.0, description="a dead lock holder's job runs again within")
    load_p95: Annotated[Seconds, Stated("lab default",
                                        lambda x, _: f"p95 < {text_seconds(x)}")] = Field(
        0.2, description="p95 of each request kind under a k6 load profile")
    security_headers: Annotated[dict[str, str], Stated(
        "checklist", lambda x, _: "every answer: " + ("; ".join(
            f"{name}" + ("" if value == ANY_VALUE else f": {value}")
            for name, value in x.items()) or "nothing"),
        table=("header", "security_headers.X-Frame-Options=DENY"))] = Field(
        default_factory=_checklist_security_headers,
        description="header -> value on every answer, 4xx and 5xx included ('*': any value)")
    rate_limit_headers: Annotated[Names, Stated(
        "checklist", lambda x, _: f"every 429: {', '.join(x) or 'nothing'}")] = Field(
        ("X-RateLimit-Status", "Retry-After"),
        description="headers every rate-limited (429) answer carries")
    fail_fast: Annotated[Seconds, Stated(
        "checklist",
        lambda x, _: f"every answer in an outage <= {text_seconds(x)}, with a status")] = Field(
        10.0, description="every request sent during a dependency outage answered within (s)")
    health_contract: Annotated[HealthContractObjective, Stated(
        "checklist", lambda x, _: x.text(),
        table=("part", "health_contract.always_ok=/health"))] = Field(
        default_factory=HealthContractObjective,
        description="what each health endpoint answers, healthy and during an outage")
    even_distribution: Annotated[bool, Stated(
        "checklist",
        lambda x, _: "each primary backend 1/n of the answers" if x else "not judged")] = Field(
        True, description="every primary backend serves an equal share of the answers")


def statements(model: type[BaseModel]) -> dict[str, Stated]:
    """Each field's ``Stated``; a field without exactly one is a programming error (raised at
    import for ``Objectives``)."""
    found: dict[str, Stated] = {}
    for name, info in model.model_fields.items():
        marks = [m for m in info.metadata if isinstance(m, Stated)]
        if len(marks) != 1:
            raise TypeError(f"objective {name}: its field must state its source and threshold "
                            f"once (Annotated[..., Stated(...)]), found {len(marks)}")
        found[name] = marks[0]
    return found


STATED = statements(Objectives)
# The objectives (a setting such as health_latency_percentile is not one), where each default
# comes from, and the objectives that are tables: all read from the fields.
OBJECTIVE_NAMES = tuple(name for name, stated in STATED.items() if stated.threshold is not None)
DEFAULT_SOURCE = {name: stated.source for name, stated in STATED.items()}
MERGED = tuple(name for name, stated in STATED.items() if stated.table is not None)


def _optional(info: Any) -> Any:
    typed = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    return typed | None


# Overrides (a scenario's block, --objective): every field optional, same validation.
ObjectiveOverrides = create_model(
    "ObjectiveOverrides", __config__=ConfigDict(frozen=True, extra="forbid"),
    **{name: (_optional(info), Field(None, description=info.description))
       for name, info in Objectives.model_fields.items()},
)


@dataclass(frozen=True)
class ObjectivesInForce:
    """The thresholds a run judges, and where each one came from."""

    values: Objectives
    sources: tuple[tuple[str, str], ...]

    def source(self, name: str) -> str:
        return dict(self.sources).get(name) or DEFAULT_SOURCE[name]

    def with_overrides(self, overrides: BaseModel | dict[str, Any] | None,
                       source: str) -> ObjectivesInForce:
        """These thresholds with the fields ``overrides`` sets replaced (rate limits merged)."""
        given = (overrides.model_dump(exclude_none=True) if isinstance(overrides, BaseModel)
                 else dict(overrides or {}))
        if not given:
            return self
        data = self.values.model_dump()
        for name, value in given.items():
            if name in MERGED and isinstance(value, dict):
                data[name] = {**data[name], **value}
                if name == "security_headers":
                    data[name] = {k: v for k, v in data[name].items()
                                  if str(v).strip().lower() != OFF}
            else:
                data[name] = value
        values = _validate(data, source)
        sources = dict(self.sources) | {name: source for name in given}
        return ObjectivesInForce(values, tuple(sources.items()))


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid objectives"]
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = f"unknown objective (objectives: {', '.join(Objectives.model_fields)})"
        lines.append(f"  objectives.{field}: {message}")
    return "\n".join(lines)


def _validate(data: dict[str, Any], source: str) -> Objectives:
    try:
        return Objectives.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source), hint="see docs/objectives.md") from None


def defaults() -> ObjectivesInForce:
    """The checklist's targets."""
    return ObjectivesInForce(Objectives(), ())


def from_table(table: dict[str, Any] | None, source: str) -> ObjectivesInForce:
    """The ``[objectives]`` table of a lab.toml, over the defaults."""
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"{source}: [objectives] must be a table")
    return defaults().with_overrides(table or {}, source)


def load_objectives(path: Path | None) -> ObjectivesInForce:
    """The objectives of a lab.toml (``path`` None: ./lab.toml when present, else the defaults)."""
    path = config_path(path)
    if path is None:
        return defaults()
    return from_table(read_toml(path).get("objectives"), str(path))


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """``--objective NAME=VALUE`` options as overrides; ``rate_limits./api/=100r/s`` sets one
    location."""
    overrides: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--objective {assignment!r}: expected NAME=VALUE",
                              hint=f"objectives: {', '.join(Objectives.model_fields)}")
        field, _, key = name.partition(".")
        if field not in Objectives.model_fields:
            raise ConfigError(f"--objective {assignment!r}: unknown objective {field!r}",
                              hint=f"objectives: {', '.join(Objectives.model_fields)}")
        table = STATED[field].table
        if table is not None:
            if not key:
                part, example = table
                raise ConfigError(f"--objective {assignment!r}: name the {part}, e.g. "
                                  f"{example}")
            overrides.setdefault(field, {})[key] = value.strip()
        elif key:
            raise ConfigError(f"--objective {assignment!r}: {field} has no part {key!r}")
        else:
            overrides[field] = value.strip()
    try:
        ObjectiveOverrides.model_validate(overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "--objective").replace("invalid objectives",
                                                                "invalid value"),
                          hint="see docs/objectives.md") from None
    return overrides


def threshold_text(values: Objectives, name: str) -> str:
    """The threshold of one objective as a comparison: "<= 50 s", ">= 0.999"."""
    threshold = STATED[name].threshold
    if threshold is None:
        raise KeyError(f"{name} is a setting of another objective, not an objective")
    return threshold(getattr(values, name), values)


def document(in_force: ObjectivesInForce) -> list[dict[str, Any]]:
    """The thresholds in force, for result.json."""
    values = in_force.values.model_dump(mode="json")
    return [{"name": name, "threshold": threshold_text(in_force.values, name),
             "value": values[name], "source": in_force.source(name),
             "description": Objectives.model_fields[name].description}
            for name in OBJECTIVE_NAMES]
