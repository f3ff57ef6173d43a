"""The check registry: every check under one name, with its parameters, the observations it
needs, how it judges, and the objectives that attach to it.

A check module registers itself at import::

    class EjectionParams(CheckParams):
        target: str
        tolerance_s: float = 0.5

    CHECKS.add(CheckDef(
        name="ejection", params=EjectionParams, judge=_judge, summary="...",
        objectives=(ObjectiveHook("ejection", judge=_objective, predict=_predict),)))

``judge(ctx, params)`` is pure: it reads the history and the expectations record in
``CheckContext`` and returns a ``CheckResult`` (conformance). ``run_check`` is the one crash
guard: it runs the judge and every objective judgement, and any exception (an expectation part
that could not be read, an observation that failed, a bug) gives that check or objective
``unknown`` with the error, never a pass and never an aborted run. A check module's pure
functions (``check_ejection(history, ...)``) carry no guard of their own: they are what the
judge computes, and what unit tests call directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from lab.checks.base import CheckResult, Measured, ObjectiveResult, Prediction, Verdict
from lab.expectations import Expectations, ExpectationUnavailable, FailureMode
from lab.history import History
from lab.objectives import OBJECTIVE_NAMES, Objectives, threshold_text
from lab.registry import Registry, strict_model


class CheckParams(BaseModel):
    """A check's parameters in a scenario file; unknown keys are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class NoParams(CheckParams):
    """A check that takes no parameters."""


class ClientParams(CheckParams):
    """Parameters of a check that judges client requests: optionally one stream's only."""

    client: str | None = None


class Observation(StrEnum):
    """What the runner must read for a check beyond the history the steps record."""

    STORED_WRITES = "stored-writes"   # write-stream request ids found in PostgreSQL
    JOB_RECORDS = "job-records"       # job_runs and fencing_rejections rows
    LOCK_SAMPLES = "lock-samples"     # Redis's lock keys, sampled all along the steps


class ObservationUnavailable(Exception):
    """An observation the runner could not make; the checks needing it are unknown."""


@dataclass(frozen=True)
class CheckContext:
    """Everything a check judges from: the history, the expectations, and facts of the run."""

    history: History
    expectations: Expectations
    names: Mapping[str, float] = field(default_factory=dict)      # duration names and values
    # Each fault target's failure mode as NGINX sees it (the first fault on it).
    failure_modes: Mapping[str, FailureMode | None] = field(default_factory=dict)
    first_failure_mode: FailureMode | None = None
    # How many faults NGINX sees fail each target got: each one ejects it anew.
    injections: Mapping[str, int] = field(default_factory=dict)
    added_latency_s: float = 0.0          # the largest round trip a latency fault injected
    targets: Mapping[str, str] = field(default_factory=dict)   # dynamic target -> node
    observations: Mapping[Observation, Any] = field(default_factory=dict)
    unavailable: Mapping[Observation, str] = field(default_factory=dict)
    rate_per_s: float = 1.0               # every traffic stream's rate, summed
    stream_rates: Mapping[str, float] = field(default_factory=dict)  # client -> req/s
    # client -> method, path
    stream_paths: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    client_timeout_s: float = 10.0        # the shortest patience of the traffic's clients
    planned_s: float = 0.0                # how long the steps are planned to take

    def node(self, target: str) -> str:
        """A check's target as a node: a dynamic one (``random``, ``holder:<job>``) as resolved."""
        return self.targets.get(target, target)

    def observation(self, kind: Observation) -> Any:
        if kind in self.unavailable:
            raise ObservationUnavailable(f"{kind.value} could not be read: "
                                         f"{self.unavailable[kind]}")
        if kind not in self.observations:
            raise ObservationUnavailable(f"{kind.value} was not observed")
        return self.observations[kind]


P = TypeVar("P", bound=CheckParams)


@dataclass(frozen=True)
class ObjectiveHook(Generic[P]):
    """One objective judged on a check's measurement, and predicted from the configuration.

    ``judge(result, objectives, ctx, params)`` returns the objective's result, or None when the
    objective does not apply to this instance (say, the health latency objective on a stream
    that is not /health); ``predict(ctx, params, objectives)`` states before any traffic what
    the configuration implies for it, from a context whose history is still empty and whose
    failure modes are those the scenario's inject steps plan (None: nothing to predict here).
    ``measure(result)`` is what the run measured in the units of the prediction's range (None:
    nothing was), so the run can say whether each prediction held.
    """

    objective: str
    judge: Callable[[CheckResult, Objectives, CheckContext, P], ObjectiveResult | None]
    predict: Callable[[CheckContext, P, Objectives], Prediction | None] | None = None
    measure: Callable[[CheckResult], Measured | None] | None = None


class After(StrEnum):
    """What a check's measured time counts from, on a run's timeline."""

    INJECT = "inject"           # the inject of the fault window the check judged
    HEAL = "heal"               # the heal of that window
    LAST_HEAL = "last heal"     # the run's last heal (a check of the run as a whole)


@dataclass(frozen=True)
class TimelineMark:
    """Where a check's measurement sits on the report's timeline: its value ``value`` (seconds)
    after ``after``, labelled "<check>: <what> +<value> s after ..."."""

    what: str                       # "last routed attempt"
    after: After
    value: str = "measured_s"


@dataclass(frozen=True)
class CheckDef(Generic[P]):
    """One registered check."""

    name: str
    params: type[P]
    judge: Callable[[CheckContext, P], CheckResult]
    summary: str                                   # one sentence: what it judges
    needs: frozenset[Observation] = frozenset()
    objectives: tuple[ObjectiveHook[P], ...] = ()
    label: Callable[[P], str] | None = None        # the instance as shown ("rate-limit /api/")
    client_filter: bool = True                     # the history is narrowed to params.client
    # What the check will expect, with the configuration's numbers, said before a run from the
    # planned history (``lab explain``); without it, the check's own judgement of the planned
    # history (no measurement in it) gives its expected text.
    describe: Callable[[CheckContext, P], str] | None = None
    # The moment the check measured, drawn on the report's timeline (None: a check over the
    # whole run, a ratio or a count, has no single moment).
    marker: TimelineMark | None = None
    # The value that is the pool's size (the report draws it where the configuration has none).
    pool_size: str | None = None
    # Lines the check adds to a run's notes from the configuration, once per run that judges
    # it (what a model predicts beyond the check's own verdict).
    notes: Callable[[Expectations], Sequence[str]] | None = None

    def __post_init__(self) -> None:
        strict_model(self.params, f"check {self.name}")
        for hook in self.objectives:
            if hook.objective not in OBJECTIVE_NAMES:
                raise TypeError(f"check {self.name}: objective {hook.objective!r} is not one of "
                                f"{', '.join(OBJECTIVE_NAMES)}")

    def shown(self, params: P) -> str:
        return self.label(params) if self.label is not None else self.name


CHECKS: Registry[CheckDef[Any]] = Registry("check")
# Objectives a module attaches to a check registered elsewhere (the objective's module owns
# its judgement): check name -> hooks, judged and predicted after the check's own.
_ATTACHED: dict[str, list[ObjectiveHook[Any]]] = {}


def attach_objective(check: str, hook: ObjectiveHook[Any]) -> None:
    """Attach one more objective to a registered check (at import of the objective's module)."""
    if hook.objective not in OBJECTIVE_NAMES:
        raise TypeError(f"check {check}: objective {hook.objective!r} is not one of "
                        f"{', '.join(OBJECTIVE_NAMES)}")
    CHECKS.get(check)   # a typo is an error at import, not a hook that never runs
    _ATTACHED.setdefault(check, []).append(hook)


def objective_hooks(definition: CheckDef[Any]) -> tuple[ObjectiveHook[Any], ...]:
    """Every objective judged on a check: its own, then those attached to it."""
    return (*definition.objectives, *_ATTACHED.get(definition.name, ()))


def register(definition: CheckDef[P]) -> CheckDef[P]:
    """Add a check to the registry (at import of its module)."""
    CHECKS.add(definition)
    return definition


def _crashed(name: str, label: str, exc: BaseException) -> CheckResult:
    measured = ("could not be judged"
                if isinstance(exc, ExpectationUnavailable | ObservationUnavailable)
                else "check crashed")
    return CheckResult(name, Verdict.UNKNOWN, measured, "-", f"{type(exc).__name__}: {exc}",
                       label=label)


def objective_unknown(name: str, objectives: Objectives, why: str) -> ObjectiveResult:
    """An objective that could not be judged (no measurement, a crash)."""
    return ObjectiveResult(name, Verdict.UNKNOWN, threshold_text(objectives, name), why, None, why)


def run_check(definition: CheckDef[Any], params: CheckParams, ctx: CheckContext,
              objectives: Objectives) -> CheckResult:
    """Judge one check and its objectives; any exception makes the affected part unknown."""
    label = definition.shown(params)
    client = getattr(params, "client", None)
    if definition.client_filter and client is not None:
        ctx = replace(ctx, history=replace(ctx.history, requests=[
            r for r in ctx.history.requests if r.client == client]))
    try:
        result = definition.judge(ctx, params)
    except Exception as exc:  # noqa: BLE001 - any crash becomes "unknown"
        result = _crashed(definition.name, label, exc)
    # One name per check: results carry the registry's name, the instance's label beside it.
    result = replace(result, name=definition.name, label=label)
    judged: list[ObjectiveResult] = []
    for hook in objective_hooks(definition):
        try:
            outcome = hook.judge(result, objectives, ctx, params)
        except Exception as exc:  # noqa: BLE001 - an objective that crashes is unknown
            outcome = objective_unknown(hook.objective, objectives, f"{type(exc).__name__}: {exc}")
        if outcome is not None:
            judged.append(outcome)
    return replace(result, objectives=tuple(judged))


def predict(definition: CheckDef[Any], params: CheckParams, ctx: CheckContext,
            objectives: Objectives) -> list[Prediction]:
    """What the configuration implies for each objective of one check, before the run."""
    out = []
    for hook in objective_hooks(definition):
        if hook.predict is None:
            continue
        try:
            prediction = hook.predict(ctx, params, objectives)
        except Exception as exc:  # noqa: BLE001 - a prediction that cannot be made says so
            prediction = Prediction(hook.objective, definition.shown(params),
                                    threshold_text(objectives, hook.objective), "not predicted",
                                    None, f"{type(exc).__name__}: {exc}")
        if prediction is not None:
            out.append(prediction)
    return out


def measured_objective(name: str, objectives: Objectives, *, value: float | None,
                       passed: bool | None, measured: str, derivation: str) -> ObjectiveResult:
    """An objective result from one measured number: pass/fail as given, unknown without a value."""
    if passed is None:
        return ObjectiveResult(name, Verdict.UNKNOWN, threshold_text(objectives, name), measured,
                               value, derivation)
    return ObjectiveResult(name, Verdict.PASS if passed else Verdict.FAIL,
                           threshold_text(objectives, name), measured, value, derivation)
