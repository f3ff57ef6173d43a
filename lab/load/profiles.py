"""Load profiles: the checklist's k6 tests and k6's test types as named, typed shapes.

A profile turns its parameters (a pydantic model that refuses unknown keys) into a
``LoadPlan``: a total arrival rate over time (a start rate and linear ``Stage``s, k6's
``ramping-arrival-rate``), split into request kinds (one k6 scenario each, with its share of
the rate), the VUs k6 may use, and the thresholds. Stages can be replaced from the command
line (``--stage 30s:1500``) or a plan file; the shares stay the profile's.

Open model throughout: iterations start on schedule whether or not earlier ones answered, so
a slow system shows as latency, never as fewer requests. When k6 has no free VU at an
iteration's time it drops the iteration (``dropped_iterations``): that run did not send what
it was asked to, and says so (``unknown``) instead of judging a system it did not load.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from lab.errors import ConfigError
from lab.load.thresholds import LoadThresholds
from lab.objectives import parse_seconds
from lab.registry import Registry, strict_model

Duration = Annotated[float, BeforeValidator(parse_seconds), Field(gt=0, le=24 * 3600)]
Rate = Annotated[float, Field(gt=0, le=100_000)]
Body = Literal["", "message", "login"]

# Little's law sizes the VU pool: in flight = rate x latency. Pre-allocated VUs cover 200 ms
# of latency at the peak rate: k6 drops iterations while it allocates more mid-run (measured:
# 33 dropped in one 200 ms stall at 119/s with 10 pre-allocated). The most it may add is sized
# from the timeout in force: every request in flight for the whole REQUEST_TIMEOUT_S, so a slow
# system shows as slow answers (and timeouts), never as a generator without free VUs. k6
# allocates those only when they are needed.
PREALLOCATED_LATENCY_S = 0.2
REQUEST_TIMEOUT_S = 10  # each request of the lab's scripts gives up after this
MIN_VUS = 20


@dataclass(frozen=True)
class Stage:
    """Ramp the total arrival rate linearly to ``target`` requests/s over ``duration_s``."""

    duration_s: float
    target: float

    def text(self) -> str:
        return f"{self.duration_s:g}s:{self.target:g}"


@dataclass(frozen=True)
class RequestKind:
    """One k6 scenario of a plan: what each of its iterations sends, and its share of the rate."""

    name: str  # the k6 scenario name, also the records' ``client``
    method: str
    path: str
    share: float
    body: Body = ""
    auth: bool = False  # sends a bearer token of a seeded user
    p95_s: float | None = None  # its own p95 bound (logins hash a password)


@dataclass(frozen=True)
class LoadPlan:
    """Everything the script writer needs: the schedule, the request kinds, VUs, thresholds."""

    profile: str
    start_rate: float
    stages: tuple[Stage, ...]
    kinds: tuple[RequestKind, ...]
    thresholds: LoadThresholds
    vus: int | None = None  # pre-allocated VUs (None: sized from the peak rate)
    max_vus: int | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return sum(stage.duration_s for stage in self.stages)

    @property
    def peak_rate(self) -> float:
        return max([self.start_rate, *(stage.target for stage in self.stages)])

    def rate_at(self, t: float) -> float:
        """The total scheduled rate ``t`` seconds after the start."""
        rate, start = self.start_rate, 0.0
        for stage in self.stages:
            if t <= start + stage.duration_s:
                return rate + (stage.target - rate) * (t - start) / stage.duration_s
            rate, start = stage.target, start + stage.duration_s
        return 0.0

    def scheduled(self, until_s: float | None = None) -> float:
        """How many iterations the schedule holds (up to ``until_s``)."""
        end = self.duration_s if until_s is None else min(until_s, self.duration_s)
        total, rate, start = 0.0, self.start_rate, 0.0
        for stage in self.stages:
            if start >= end:
                break
            span = min(stage.duration_s, end - start)
            slope = (stage.target - rate) / stage.duration_s
            total += rate * span + slope * span * span / 2
            rate, start = stage.target, start + stage.duration_s
        return total

    def kind_rates(self, kind: RequestKind) -> tuple[float, tuple[Stage, ...]]:
        """One kind's start rate and stages as k6 runs them: k6 takes whole iterations per
        ``timeUnit``, so each kind's rates are rounded to whole iterations per minute."""

        def rounded(rate: float) -> float:
            return round(rate * kind.share * 60) / 60

        return rounded(self.start_rate), tuple(
            Stage(s.duration_s, rounded(s.target)) for s in self.stages
        )

    def time_of(self, iteration: int, kind: RequestKind) -> float | None:
        """When k6 starts iteration ``iteration`` (0-based) of a kind, in seconds after the
        start; None if the schedule never reaches it.

        k6 starts iteration ``i`` of a scenario when the integral of its rate reaches ``i + 1``."""
        rate, stages = self.kind_rates(kind)
        done, start, need_total = 0.0, 0.0, iteration + 1
        for stage in stages:
            slope = (stage.target - rate) / stage.duration_s
            area = rate * stage.duration_s + slope * stage.duration_s**2 / 2
            if done + area >= need_total - 1e-9:
                need = need_total - done
                if abs(slope) < 1e-12:
                    return start + (need / rate if rate > 0 else 0.0)
                # need = rate*x + slope*x^2/2: the root inside the stage.
                x = (-rate + math.sqrt(max(0.0, rate * rate + 2 * slope * need))) / slope
                return start + min(max(x, 0.0), stage.duration_s)
            done, rate, start = done + area, stage.target, start + stage.duration_s
        return None

    def vus_for(self, kind: RequestKind) -> tuple[int, int]:
        """(pre-allocated, max) VUs of one request kind."""
        peak = self.peak_rate * kind.share
        if self.vus is not None:
            pre = max(1, math.ceil(self.vus * kind.share))
        else:
            pre = max(MIN_VUS, math.ceil(peak * PREALLOCATED_LATENCY_S))
        if self.max_vus is not None:
            most = max(1, math.ceil(self.max_vus * kind.share))
        elif self.vus is not None:
            most = pre
        else:
            most = pre + math.ceil(peak * REQUEST_TIMEOUT_S)
        return pre, max(pre, most)

    def with_stages(self, stages: tuple[Stage, ...], start_rate: float | None = None) -> LoadPlan:
        """The same plan on another schedule."""
        if not stages:
            raise ConfigError("a load plan needs at least one stage")
        return replace(
            self, stages=stages, start_rate=self.start_rate if start_rate is None else start_rate
        )

    def describe(self) -> str:
        """The schedule in one line: ``0 -> 1500/s over 5s, 1500/s for 30s``."""
        parts, rate = [], self.start_rate
        for stage in self.stages:
            if math.isclose(stage.target, rate):
                parts.append(f"{rate:g}/s for {stage.duration_s:g}s")
            else:
                parts.append(f"{rate:g} -> {stage.target:g}/s over {stage.duration_s:g}s")
            rate = stage.target
        return ", ".join(parts)


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    vus: Annotated[int, Field(ge=1, le=20_000)] | None = None
    max_vus: Annotated[int, Field(ge=1, le=20_000)] | None = None


class _OnePath(_Params):
    path: Annotated[str, Field(pattern=r"^/")] = "/health"
    auth: bool = False  # send a seeded user's token (the /api/ paths want one)


class SmokeParams(_OnePath):
    rate: Rate = 5
    duration_s: Duration = 10


class LoadParams(_OnePath):
    rate: Rate = 1500  # the checklist: 1,500-2,000 req/s
    ramp_s: Duration = 5
    duration_s: Duration = 30


class StressParams(_OnePath):
    rate: Rate = 1500  # the normal load; two steps above it up to the peak
    peak: Rate = 3000
    step_s: Duration = 15
    ramp_s: Duration = 5


class SpikeParams(_OnePath):
    base: Rate = 100
    peak: Rate = 3000
    base_s: Duration = 10
    spike_s: Duration = 10
    ramp_s: Duration = 2


class SoakParams(_OnePath):
    rate: Rate = 500
    ramp_s: Duration = 10
    duration_s: Duration = 300


class BreakpointParams(_OnePath):
    start: Rate = 50
    peak: Rate = 4000
    duration_s: Duration = 120


class ConversationParams(_Params):
    rate: Rate = 200  # all three kinds together
    reads: Annotated[float, Field(gt=0, le=1)] = 0.8
    writes: Annotated[float, Field(ge=0, le=1)] = 0.18
    logins: Annotated[float, Field(ge=0, le=1)] = 0.02
    ramp_s: Duration = 5
    duration_s: Duration = 30
    login_p95_s: Annotated[float, BeforeValidator(parse_seconds), Field(gt=0)] = 1.0


@dataclass(frozen=True)
class ProfileDef:
    """A registered profile: its parameters and how they become a plan."""

    name: str
    params: type[BaseModel]
    summary: str
    build: Callable[[Any, LoadThresholds], LoadPlan]
    thresholds: Callable[[LoadThresholds], LoadThresholds] = lambda given: given

    def __post_init__(self) -> None:
        strict_model(self.params, f"profile {self.name}")


PROFILES: Registry[ProfileDef] = Registry("profile")


def _one(
    profile: str, p: _OnePath, t: LoadThresholds, start: float, stages: list[tuple[float, float]]
) -> LoadPlan:
    return LoadPlan(
        profile,
        start,
        tuple(Stage(d, r) for d, r in stages),
        (RequestKind("main", "GET", p.path, 1.0, auth=p.auth),),
        t,
        p.vus,
        p.max_vus,
        p.model_dump(),
    )


PROFILES.add(
    ProfileDef(
        "smoke",
        SmokeParams,
        "a few requests per second: does everything answer at all",
        lambda p, t: _one("smoke", p, t, p.rate, [(p.duration_s, p.rate)]),
    )
)
PROFILES.add(
    ProfileDef(
        "load",
        LoadParams,
        "the checklist's expected load (1,500 req/s), held after a short ramp",
        lambda p, t: _one("load", p, t, 0, [(p.ramp_s, p.rate), (p.duration_s, p.rate)]),
    )
)
PROFILES.add(
    ProfileDef(
        "stress",
        StressParams,
        "steps from the normal load to twice it, held at each step",
        lambda p, t: _one(
            "stress",
            p,
            t,
            0,
            [
                (p.ramp_s, p.rate),
                (p.step_s, p.rate),
                (p.ramp_s, (p.rate + p.peak) / 2),
                (p.step_s, (p.rate + p.peak) / 2),
                (p.ramp_s, p.peak),
                (p.step_s, p.peak),
                (p.ramp_s, 0),
            ],
        ),
    )
)
PROFILES.add(
    ProfileDef(
        "spike",
        SpikeParams,
        "a quiet base load, a sudden spike, back to the base",
        lambda p, t: _one(
            "spike",
            p,
            t,
            p.base,
            [
                (p.base_s, p.base),
                (p.ramp_s, p.peak),
                (p.spike_s, p.peak),
                (p.ramp_s, p.base),
                (p.base_s, p.base),
            ],
        ),
    )
)
PROFILES.add(
    ProfileDef(
        "soak",
        SoakParams,
        "a moderate load held long: memory growth per container",
        lambda p, t: _one("soak", p, t, 0, [(p.ramp_s, p.rate), (p.duration_s, p.rate)]),
    )
)
PROFILES.add(
    ProfileDef(
        "breakpoint",
        BreakpointParams,
        "ramp until a threshold breaks (k6 abortOnFail), and report the rate where it did",
        lambda p, t: _one("breakpoint", p, t, p.start, [(p.duration_s, p.peak)]),
        thresholds=lambda given: given.model_copy(update={"abort_on_fail": True}),
    )
)


def _conversation(p: ConversationParams, t: LoadThresholds) -> LoadPlan:
    total = p.reads + p.writes + p.logins
    kinds = [RequestKind("reads", "GET", "/api/conversations", p.reads / total, auth=True)]
    if p.writes:
        kinds.append(
            RequestKind(
                "writes", "POST", "/api/messages", p.writes / total, body="message", auth=True
            )
        )
    if p.logins:
        kinds.append(
            RequestKind(
                "logins",
                "POST",
                "/api/auth/login",
                p.logins / total,
                body="login",
                p95_s=p.login_p95_s,
            )
        )
    return LoadPlan(
        "conversation",
        0,
        (Stage(p.ramp_s, p.rate), Stage(p.duration_s, p.rate)),
        tuple(kinds),
        t,
        p.vus,
        p.max_vus,
        p.model_dump(),
    )


PROFILES.add(
    ProfileDef(
        "conversation",
        ConversationParams,
        "the checklist's conversation test: reads, writes and logins with the lab's seeded users",
        _conversation,
    )
)


def parse_stage(text: str) -> Stage:
    """``30s:1500`` (duration and target rate) as a Stage; ConfigError naming the option."""
    duration, sep, target = text.partition(":")
    try:
        if not sep:
            raise ValueError("expected DURATION:RATE")
        seconds = parse_seconds(duration.strip())
        rate = float(target)
        if not isinstance(seconds, float) or not 0 < seconds <= 24 * 3600:
            raise ValueError("the duration must be within (0, 24h]")
        if not 0 <= rate <= 100_000:
            raise ValueError("the rate must be within [0, 100000] requests/s")
    except ValueError as exc:
        raise ConfigError(f"--stage {text!r}: {exc}", hint="e.g. --stage 30s:1500") from None
    return Stage(seconds, rate)


def build_plan(
    profile: str,
    params: dict[str, Any],
    thresholds: LoadThresholds,
    *,
    stages: tuple[Stage, ...] = (),
    start_rate: float | None = None,
    source: str = "--set",
) -> LoadPlan:
    """A profile's plan from its parameters; unknown parameters are refused with the profile's
    own list."""
    definition = PROFILES.get(profile)
    try:
        values = definition.params.model_validate(params)
    except ValidationError as exc:
        lines = [f"{source}: invalid parameters for profile {profile}"]
        for item in exc.errors():
            name = ".".join(str(p) for p in item["loc"]) or "(top level)"
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = (
                    f"unknown parameter (profile {profile} takes "
                    f"{', '.join(definition.params.model_fields)})"
                )
            lines.append(f"  {name}: {message}")
        raise ConfigError("\n".join(lines)) from None
    plan = definition.build(values, definition.thresholds(thresholds))
    if stages:
        plan = plan.with_stages(stages, start_rate)
    elif start_rate is not None:
        plan = replace(plan, start_rate=start_rate)
    if plan.peak_rate <= 0:
        raise ConfigError(f"profile {profile}: the schedule never sends a request (peak rate 0)")
    return plan
