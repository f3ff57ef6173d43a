"""Judging a run: every check of a scenario and its objectives, from the history, the
expectations record and a few facts of the run, with no Docker and no network.

Because judging is pure, a finished run can be judged again against another expectations
record or other objectives (``rejudge``): the same measurement read against the configuration
that ran and against the configuration a checklist claims.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from lab.checks import CHECKS, CheckContext, CheckResult, Observation, run_check
from lab.checks.registry import objective_hooks
from lab.checks.registry import predict as predict_check
from lab.expectations import Expectations, FailureMode
from lab.faults import FAULTS
from lab.history import FaultEvent, FaultPhase, HealthWatch, History
from lab.objectives import Objectives
from lab.scenarios.model import Scenario
from lab.scenarios.state import is_dynamic
from lab.scenarios.steps import HealStep, InjectStep, WatchStep, definition_of
from lab.verdict import Measured, Prediction


@dataclass(frozen=True)
class RunFacts:
    """What the checks need beyond the history and the expectations: how the run went."""

    names: tuple[tuple[str, float], ...]                 # duration names and their values
    rate_per_s: float
    stream_rates: tuple[tuple[str, float], ...] = ()
    stream_paths: tuple[tuple[str, tuple[str, str]], ...] = ()
    client_timeout_s: float = 10.0
    planned_s: float = 0.0
    failure_modes: tuple[tuple[str, FailureMode | None], ...] = ()   # target -> first fault's mode
    # target -> how many of its faults NGINX sees fail (a crash loop's each kill ejects anew)
    injections: tuple[tuple[str, int], ...] = ()
    added_latency_s: float = 0.0
    targets: tuple[tuple[str, str], ...] = ()            # dynamic target -> node
    stored_writes: frozenset[str] | None = None
    observed: tuple[str, ...] = ()                       # observations made (Observation values)
    unavailable: tuple[tuple[str, str], ...] = field(default_factory=tuple)   # observation -> error

    def context(self, history: History, expectations: Expectations) -> CheckContext:
        modes = dict(self.failure_modes)
        # Job records and lock samples are in the history itself; stored writes are not.
        observations: dict[Observation, object] = {Observation(kind): True
                                                   for kind in self.observed}
        if self.stored_writes is not None:
            observations[Observation.STORED_WRITES] = self.stored_writes
        return CheckContext(
            history=history, expectations=expectations, names=dict(self.names),
            failure_modes=modes, first_failure_mode=next(iter(modes.values()), None),
            injections=dict(self.injections),
            added_latency_s=self.added_latency_s, targets=dict(self.targets),
            observations=observations,
            unavailable={Observation(kind): error for kind, error in self.unavailable},
            rate_per_s=self.rate_per_s, stream_rates=dict(self.stream_rates),
            stream_paths=dict(self.stream_paths), planned_s=self.planned_s,
            client_timeout_s=self.client_timeout_s)


def failure_modes(
        kinds_and_targets: Iterable[tuple[str, str]]) -> tuple[tuple[str, FailureMode | None], ...]:
    """Each target's failure mode as NGINX sees it, from the first fault on it."""
    modes: dict[str, FailureMode | None] = {}
    for kind, target in kinds_and_targets:
        modes.setdefault(target, FAULTS.get(kind).failure_mode)
    return tuple(modes.items())


def injections(kinds_and_targets: Iterable[tuple[str, str]]) -> tuple[tuple[str, int], ...]:
    """How many faults NGINX sees fail (a failure mode) each target got."""
    counts: dict[str, int] = {}
    for kind, target in kinds_and_targets:
        if FAULTS.get(kind).failure_mode is not None:
            counts[target] = counts.get(target, 0) + 1
    return tuple(counts.items())


def _planned_faults(scenario: Scenario) -> list[tuple[str, str]]:
    """(fault, target) of the scenario's inject steps (dynamic targets are not known yet)."""
    return [(step.inject.fault, step.inject.target) for step in scenario.steps
            if isinstance(step, InjectStep) and not is_dynamic(step.inject.target)]


def planned_injections(scenario: Scenario) -> tuple[tuple[str, int], ...]:
    """The counts ``injections`` gives for the scenario's inject steps."""
    return injections(_planned_faults(scenario))


def planned_failure_modes(scenario: Scenario) -> tuple[tuple[str, FailureMode | None], ...]:
    """The failure modes the scenario's inject steps plan."""
    return failure_modes(_planned_faults(scenario))


# Planned times start here: some checks read a time of 0 as "none".
PLAN_ORIGIN = 1000.0


def planned_history(scenario: Scenario, names: Mapping[str, float],
                    ready_s: float = 60.0) -> History:
    """What the steps plan, as a history with no measurement in it: each inject and heal at its
    planned time, each health watch, and the start and end marks."""
    history = History()
    history.mark("start", PLAN_ORIGIN)
    at, open_faults = PLAN_ORIGIN, []
    watches: list[tuple[str, float, float]] = []
    for step in scenario.steps:
        if isinstance(step, InjectStep):
            history.faults.append(FaultEvent(step.inject.fault, step.inject.target,
                                             FaultPhase.INJECT, at, at, "planned",
                                             FAULTS.get(step.inject.fault).effect))
            open_faults.append((step.inject.fault, step.inject.target))
        elif isinstance(step, HealStep):
            healed = list(open_faults) if step.heal == "all" else [
                (step.heal.fault, step.heal.target)]   # type: ignore[union-attr]
            for kind, target in healed:
                history.faults.append(FaultEvent(kind, target, FaultPhase.HEAL, at, at,
                                                 "planned", FAULTS.get(kind).effect))
                if (kind, target) in open_faults:
                    open_faults.remove((kind, target))
        elif isinstance(step, WatchStep):
            watches.append((step.watch.node, step.watch.interval_s, at))
        at += definition_of(step).planned_s(step, names, ready_s)
    history.health_watches.extend(HealthWatch(node, interval, started, at, 0, "planned")
                                  for node, interval, started in watches)
    history.mark("end", at)
    return history


def expected_before(scenario: Scenario, expectations: Expectations, facts: RunFacts,
                    objectives: Objectives, ready_s: float = 60.0) -> tuple[tuple[str, str], ...]:
    """Each check's label and what it will expect, with the configuration's numbers, before any
    traffic: its own ``describe``, or its judgement of the planned history (which has faults
    and watches but no measurement, so the check reads nothing and states its expectation)."""
    names = dict(facts.names)
    history = planned_history(scenario, names, ready_s)
    planned = replace(facts, observed=tuple(o.value for o in Observation),
                      stored_writes=frozenset(), unavailable=())
    ctx = planned.context(history, expectations)
    out = []
    for spec in scenario.checks:
        definition = CHECKS.get(spec.check)
        if definition.describe is not None:
            try:
                text = definition.describe(ctx, spec)
            except Exception as exc:  # noqa: BLE001 - said instead of an expectation
                text = f"not stated ({type(exc).__name__}: {exc})"
        else:
            text = run_check(definition, spec, ctx, objectives).expected
        out.append((definition.shown(spec), text))
    return tuple(out)


def judge(scenario: Scenario, history: History, expectations: Expectations, facts: RunFacts,
          objectives: Objectives) -> tuple[CheckResult, ...]:
    """Every check of the scenario, each with its objectives."""
    ctx = facts.context(history, expectations)
    return tuple(run_check(CHECKS.get(spec.check), spec, ctx, objectives)
                 for spec in scenario.checks)


def predictions(scenario: Scenario, expectations: Expectations, facts: RunFacts,
                objectives: Objectives) -> tuple[Prediction, ...]:
    """What the configuration in force implies for every objective, before any traffic."""
    ctx = facts.context(History(), expectations)
    out: list[Prediction] = []
    for spec in scenario.checks:
        for prediction in predict_check(CHECKS.get(spec.check), spec, ctx, objectives):
            if prediction not in out:
                out.append(prediction)
    return tuple(out)


# What a run measured for a prediction, from its check's result (``ObjectiveHook.measure``).
Measure = Callable[[CheckResult], Measured | None]


def held(scenario: Scenario, checks: tuple[CheckResult, ...],
         stated: tuple[Prediction, ...]) -> tuple[Prediction, ...]:
    """Each prediction held against what its check measured (``Prediction.held``): the
    configuration's model tested on the run, apart from both verdicts. A prediction names its
    check by the registry's name (or the instance's label); of several instances, the first
    scenario check of that name measures it."""
    results = {c.shown: c for c in checks}
    measures: dict[tuple[str, str], tuple[CheckResult, Measure]] = {}
    for spec in scenario.checks:
        definition = CHECKS.get(spec.check)
        result = results.get(definition.shown(spec))
        if result is None:
            continue
        for hook in objective_hooks(definition):
            if hook.measure is not None:
                for name in (definition.name, definition.shown(spec)):
                    measures.setdefault((name, hook.objective), (result, hook.measure))
    out = []
    for prediction in stated:
        found = measures.get((prediction.check, prediction.objective))
        if found is None or not prediction.bounded:
            out.append(prediction)
            continue
        result, measure = found
        out.append(prediction.compare(measure(result)))
    return tuple(out)
