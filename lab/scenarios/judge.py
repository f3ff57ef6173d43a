"""Judging a run: every check of a scenario and its objectives, from the history, the
expectations record and a few facts of the run, with no Docker and no network.

Because judging is pure, a finished run can be judged again against another expectations
record or other objectives (``rejudge``): the same measurement read against the configuration
that ran and against the configuration a checklist claims.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from lab.checks import CHECKS, CheckContext, CheckResult, Observation, run_check
from lab.checks.registry import predict as predict_check
from lab.expectations import Expectations, FailureMode
from lab.faults import FAULTS
from lab.history import History
from lab.objectives import Objectives
from lab.scenarios.model import Scenario
from lab.scenarios.state import is_dynamic
from lab.scenarios.steps import InjectStep
from lab.verdict import Prediction


@dataclass(frozen=True)
class RunFacts:
    """What the checks need beyond the history and the expectations: how the run went."""

    names: tuple[tuple[str, float], ...]                 # duration names and their values
    rate_per_s: float
    stream_rates: tuple[tuple[str, float], ...] = ()
    stream_paths: tuple[tuple[str, tuple[str, str]], ...] = ()
    planned_s: float = 0.0
    failure_modes: tuple[tuple[str, FailureMode | None], ...] = ()   # target -> first fault's mode
    added_latency_s: float = 0.0
    targets: tuple[tuple[str, str], ...] = ()            # dynamic target -> node
    stored_writes: frozenset[str] | None = None
    observed: tuple[str, ...] = ()                       # observations made (Observation values)
    unavailable: tuple[tuple[str, str], ...] = field(default_factory=tuple)   # observation -> error

    def context(self, history: History, expectations: Expectations) -> CheckContext:
        modes = dict(self.failure_modes)
        # Job records and lock samples are in the history itself; stored writes are not.
        observations: dict[Observation, object] = {Observation(kind): True for kind in self.observed}
        if self.stored_writes is not None:
            observations[Observation.STORED_WRITES] = self.stored_writes
        return CheckContext(
            history=history, expectations=expectations, names=dict(self.names),
            failure_modes=modes, first_failure_mode=next(iter(modes.values()), None),
            added_latency_s=self.added_latency_s, targets=dict(self.targets),
            observations=observations,
            unavailable={Observation(kind): error for kind, error in self.unavailable},
            rate_per_s=self.rate_per_s, stream_rates=dict(self.stream_rates),
            stream_paths=dict(self.stream_paths), planned_s=self.planned_s)


def failure_modes(kinds_and_targets: Iterable[tuple[str, str]]) -> tuple[tuple[str, FailureMode | None], ...]:
    """Each target's failure mode as NGINX sees it, from the first fault on it."""
    modes: dict[str, FailureMode | None] = {}
    for kind, target in kinds_and_targets:
        modes.setdefault(target, FAULTS.get(kind).failure_mode)
    return tuple(modes.items())


def planned_failure_modes(scenario: Scenario) -> tuple[tuple[str, FailureMode | None], ...]:
    """The failure modes the scenario's inject steps plan (dynamic targets are not known yet)."""
    return failure_modes((step.inject.fault, step.inject.target) for step in scenario.steps
                         if isinstance(step, InjectStep) and not is_dynamic(step.inject.target))


def judge(scenario: Scenario, history: History, expectations: Expectations, facts: RunFacts,
          objectives: Objectives) -> tuple[CheckResult, ...]:
    """Every check of the scenario, each with its objectives."""
    ctx = facts.context(history, expectations)
    return tuple(run_check(CHECKS.get(spec.check), spec, ctx, objectives) for spec in scenario.checks)


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
