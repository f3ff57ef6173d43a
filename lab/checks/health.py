"""The health-endpoint contract: what each backend's four endpoints answer in each lab state,
and how they change: at startup, while draining, and as a dependency goes and comes back.

Samples are taken per backend, directly (``docker exec lab-probe``, or a health watcher in a
client container on the lab network): through NGINX a 503 is retried and counted as a failure
of the backend that gave it, which is itself a finding.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from lab.checks.base import (
    CheckResult,
    ObjectiveResult,
    Prediction,
    Verdict,
    combine,
)
from lab.checks.outcomes import fault_windows
from lab.checks.registry import (
    CheckContext,
    CheckDef,
    CheckParams,
    NoParams,
    ObjectiveHook,
    measured_objective,
    register,
)
from lab.history import WATCHED, FaultPhase, HealthSample, HealthWatch, History, ready_mark
from lab.objectives import Objectives, threshold_text

NAME = "health-contract"
PATHS = ("/health", "/health/live", "/health/ready", "/health/detailed")
# What each endpoint answers in each state (the backend's documented contract): /health and
# /health/live never ask a dependency; ready and detailed answer 503 when one is down.
CONTRACT: dict[str, dict[str, int]] = {
    "healthy": {"/health": 200, "/health/live": 200, "/health/ready": 200,
                "/health/detailed": 200},
    "redis-down": {"/health": 200, "/health/live": 200, "/health/ready": 503,
                   "/health/detailed": 503},
    "database-down": {"/health": 200, "/health/live": 200, "/health/ready": 503,
                      "/health/detailed": 503},
}
# The dependency /health/detailed must name as failed in each state (and only it).
FAILED = {"healthy": (), "redis-down": ("redis",), "database-down": ("database",)}


def _detailed_problem(sample: HealthSample) -> str | None:
    """What is wrong with a /health/detailed body for its state, if anything."""
    try:
        checks = json.loads(sample.body).get("checks", {})
    except (ValueError, AttributeError):
        return f"body is not the documented JSON: {sample.body[:80]!r}"
    failed = tuple(sorted(name for name, state in checks.items() if state == "failed"))
    expected = FAILED[sample.expectation]
    if failed != tuple(sorted(expected)):
        return (f"checks marks {', '.join(failed) or 'nothing'} failed, expected "
                f"{', '.join(expected) or 'nothing'}")
    return None


def check_health_contract(history: History) -> CheckResult:
    """Whether every sampled health answer matches the contract for the state it was taken in."""
    samples = [s for s in history.health_samples if s.expectation in CONTRACT]
    expected = ("/health and /health/live 200 always; /health/ready and /health/detailed 200 when "
                "healthy, 503 with the failed dependency named when Redis or the database is down")
    derivation = "the backend's documented contract (images/backend/README.md), per state sampled"
    if not samples:
        return CheckResult(NAME, Verdict.UNKNOWN, "no health sample", expected, derivation)
    problems = []
    for sample in samples:
        want = CONTRACT[sample.expectation][sample.path]
        where = f"{sample.node} {sample.path} ({sample.expectation})"
        if sample.status != want:
            problems.append(f"{where}: {sample.status} where {want} was expected: "
                            f"{sample.body[:100]}")
        elif sample.path == "/health/detailed" and (problem := _detailed_problem(sample)):
            problems.append(f"{where}: {problem}")
    states = Counter(s.expectation for s in samples)
    nodes = {s.node for s in samples}
    measured = (f"{len(samples)} answers from {len(nodes)} backend(s) in states "
                f"{', '.join(f'{k} x{v}' for k, v in sorted(states.items()))}; "
                f"{len(problems)} off contract")
    values = (("samples", float(len(samples))), ("problems", float(len(problems))))
    return CheckResult(NAME, Verdict.FAIL if problems else Verdict.PASS, measured, expected,
                       derivation, tuple(problems[:20]), values)


# -- transitions, from a health watcher's samples (lab.workload.health_watch) ---------------

STARTUP = "health-startup"
DRAIN = "health-drain"
DETAILED_TIMING = "health-detailed-timing"


def _watched(history: History, node: str, path: str | None = None) -> list[HealthSample]:
    """A watcher's samples of one backend (one path, or all), in the order they were sent."""
    samples = [s for s in history.health_samples if s.expectation == WATCHED and s.node == node
               and (path is None or s.path == path)]
    return sorted(samples, key=lambda s: s.sent_at if s.sent_at is not None else s.at)


def _sent(sample: HealthSample) -> float:
    return sample.sent_at if sample.sent_at is not None else sample.at


def watch_lateness(samples: list[HealthSample], interval_s: float,
                   faults: History | None = None) -> tuple[float, float]:
    """How late a watcher's samples come, measured on its own samples while nothing was broken
    (outside every fault window of ``faults``): (the longest pause between an answer and the
    next request of the same path, the longest answer among the 200s). Together they bound how
    long after a change the first sample showing it can come: the scheduling of a shared
    machine is measured, not assumed."""
    # A fault lasts until its node is ready again (a restarted backend's first answers are
    # slow for its own reasons, not the watcher's).
    windows = [(start, until) for _, start, until in
               (fault_windows(faults) if faults is not None else [])]

    def quiet(sample: HealthSample) -> bool:
        return not any(start <= sample.at and _sent(sample) <= end for start, end in windows)

    pauses: list[float] = []
    last: dict[str, HealthSample] = {}
    for sample in samples:
        if not quiet(sample):
            last.pop(sample.path, None)
            continue
        previous = last.get(sample.path)
        # Only after a healthy answer: an error or a stopped backend is waited out by design,
        # and is what the bounds judge, not how the watcher is scheduled.
        if previous is not None and previous.status == 200 and sample.sent_at is not None:
            pauses.append(max(0.0, sample.sent_at - previous.at))
        last[sample.path] = sample
    answers = [s.at - s.sent_at for s in samples
               if s.status == 200 and s.sent_at is not None and quiet(s)]
    return max(pauses, default=interval_s), max(answers, default=0.0)


def _covering(history: History, node: str, start: float, end: float) -> HealthWatch | None:
    """The watch of ``node`` whose samples span [start, end], if any."""
    return next((w for w in history.health_watches if w.node == node and w.started_at <= start
                 and w.ended_at >= end), None)


def _failed_names(body: str) -> tuple[str, ...]:
    try:
        checks = json.loads(body).get("checks", {})
    except (ValueError, AttributeError):
        return ()
    return tuple(sorted(name for name, state in checks.items() if state == "failed"))


@dataclass
class _Judged:
    """One verdict and its one-line reason per transition judged, and the numbers behind them."""

    verdicts: list[Verdict] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    values: list[tuple[str, float]] = field(default_factory=list)

    def add(self, verdict: Verdict, line: str) -> None:
        self.verdicts.append(verdict)
        self.lines.append(line)

    def result(self, name: str, expected: str, derivation: str, nothing: str) -> CheckResult:
        if not self.verdicts:
            return CheckResult(name, Verdict.UNKNOWN, nothing, expected, derivation)
        return CheckResult(name, combine(self.verdicts), "; ".join(self.lines), expected,
                           derivation, tuple(self.lines[:20]), tuple(self.values))


def check_ready_at_startup(history: History) -> CheckResult:
    """Whether each watched backend, started again, answered /health/ready 503 before its
    first 200."""
    expected = ("after a restart, the first /health/ready answer is 503 (starting), and 200 "
                "follows once startup completes")
    derivation = ("the backend's lifecycle (images/backend server.py): the server listens before "
                  "the bootstrap (database retries, schema, job scheduler) ends, and readiness is "
                  "503 until it does; the watcher retries every 10 ms while nothing answers, so "
                  "the first answer is the first one the new process gives")
    judged = _Judged()
    for watch in history.health_watches:
        ready = _watched(history, watch.node, "/health/ready")
        for event in history.faults:
            # A fault that ends the process: the node's next answers come from a new one.
            if event.target != watch.node or not event.effect.ends \
                    or event.phase is not FaultPhase.INJECT:
                continue
            where = f"{watch.node} after {event.fault}"
            gone = next((s for s in ready if _sent(s) >= event.started_at and s.status is None),
                        None)
            if gone is None:
                judged.add(Verdict.UNKNOWN, f"{where}: the watch never saw the process gone")
                continue
            answers = [s for s in ready if _sent(s) > _sent(gone) and s.status is not None]
            if not answers:
                judged.add(Verdict.UNKNOWN,
                           f"{where}: no /health/ready answer before the watch ended")
                continue
            first = answers[0]
            since = first.at - gone.at
            if first.status != 503:
                judged.add(Verdict.FAIL, f"{where}: first /health/ready answer was "
                           f"{first.status}, expected 503 (observed {first.body[:80]!r}, "
                           f"{since:.3f} s after the first refused request)")
                continue
            ready_at = next((s for s in answers if s.status == 200), None)
            if ready_at is None:
                judged.add(Verdict.UNKNOWN,
                           f"{where}: 503 first, but no 200 before the watch ended")
                continue
            not_ready = sum(1 for s in answers if _sent(s) < _sent(ready_at))
            window = ready_at.at - first.at
            judged.add(Verdict.PASS, f"{where}: first /health/ready answer 503 "
                       f"({first.body[:40]!r}), then {not_ready - 1} more 503, 200 "
                       f"{window:.3f} s after the first 503")
            judged.values.append(("not_ready_s", window))
    return judged.result(STARTUP, expected, derivation, "no restart of a watched backend")


def check_ready_while_draining(history: History, *, drain_s: float) -> CheckResult:
    """Whether each watched backend, sent SIGTERM, answered /health/ready 503 at once and until it
    was gone, while /health/live still answered, for at least its drain time."""
    derivation = ("the backend's drain (LAB_DRAIN_S = BackendConfig.drain_s = {drain:g} s): on "
                  "SIGTERM readiness turns 503 and requests are still served for drain_s, then it "
                  "stops accepting; the watcher asks each path again a pause after each answer, "
                  "so the first 503 comes within pause + answer of SIGTERM and the last answer at "
                  "most that before the listener closes: answers for at least "
                  "drain_s - pause - answer = {drain:g} - {interval} - {tolerance} = "
                  "{floor} s, the pause and the answer the longest this watcher's own samples "
                  "show")
    judged = _Judged()
    interval = 0.0
    late = 0.0
    for watch in history.health_watches:
        samples = _watched(history, watch.node)
        interval, late = watch_lateness(samples, watch.interval_s, history)
        floor = drain_s - interval - late
        for event in history.faults:
            # Only a fault that ends the process through SIGTERM lets it drain (stop, restart).
            if event.target != watch.node or not event.effect.drains \
                    or event.phase is not FaultPhase.INJECT:
                continue
            sigterm = event.started_at
            where = f"{watch.node} after SIGTERM"
            if watch.started_at > sigterm:
                judged.add(Verdict.UNKNOWN, f"{where}: the watch started after the stop")
                continue
            gone = next((s for s in samples if _sent(s) >= sigterm and s.status is None), None)
            gone_at = min(_sent(gone) if gone else float("inf"), event.at)
            during = [s for s in samples if sigterm <= _sent(s) < gone_at and s.status is not None]
            ready = [s for s in during if s.path == "/health/ready"]
            first = next((s for s in ready if s.status == 503), None)
            if first is None:
                judged.add(Verdict.FAIL, f"{where}: no /health/ready 503 before the process was "
                           "gone, expected 503 while draining (observed "
                           f"{', '.join(str(s.status) for s in ready) or 'no answer'})")
                continue
            problems = []
            turned = _sent(first) - sigterm
            if turned > interval + late:
                problems.append(f"ready turned 503 {turned:.3f} s after SIGTERM, expected within "
                                f"{interval + late:.3f} s")
            relapse = [s for s in ready if _sent(s) > _sent(first) and s.status != 503]
            if relapse:
                problems.append(f"ready answered {relapse[0].status} "
                                f"{_sent(relapse[0]) - sigterm:.3f} s after "
                                "SIGTERM, expected 503 until exit")
            live = [s for s in during if s.path == "/health/live" and _sent(s) >= _sent(first)]
            if not live or any(s.status != 200 for s in live):
                problems.append("/health/live while draining: "
                                f"{', '.join(str(s.status) for s in live) or 'no answer'}"
                                ", expected 200")
            served = max(_sent(s) for s in during) - sigterm
            if served < floor:
                problems.append(f"answered for {served:.3f} s after SIGTERM, expected at least "
                                f"{floor:.3f} s")
            judged.add(Verdict.FAIL if problems else Verdict.PASS,
                       f"{where}: ready 503 from +{turned:.3f} s, {len(live)} live 200, "
                       f"answers until +{served:.3f} s, gone +{gone_at - sigterm:.3f} s"
                       + (": " + "; ".join(problems) if problems else ""))
            judged.values += [("ready_503_after_s", turned), ("answered_for_s", served)]
    floor_text = f"{drain_s - interval - late:.3f}"
    derivation = derivation.format(drain=drain_s, interval=f"{interval:.3f}",
                                   tolerance=f"{late:.3f}", floor=floor_text)
    expected = ("after SIGTERM: /health/ready 503 within the watcher's pause + answer and until "
                f"the process is gone, /health/live 200 meanwhile, answers for at least "
                f"{floor_text} s")
    return judged.result(DRAIN, expected, derivation, "no SIGTERM to a watched backend")


def check_detailed_follows_dependency(history: History, *, dependency_timeout_s: float,
                                      dependency: str = "redis") -> CheckResult:
    """Whether each watched backend's /health/detailed turned 503 (naming the dependency) within
    the bound after the dependency went away, and 200 within the bound after it was back."""
    judged = _Judged()
    interval = 0.0
    bound = 0.0
    late = 0.0
    for watch in history.health_watches:
        interval, late = watch_lateness(_watched(history, watch.node), watch.interval_s,
                                        history)
        bound = interval + dependency_timeout_s + late
        detailed = _watched(history, watch.node, "/health/detailed")
        for inject, heal in history.fault_windows(dependency):
            # The dependency gone until the heal (ended, frozen or cut off), not merely slowed.
            if not inject.effect.outage or heal is None:
                continue
            where = f"{watch.node}, {dependency} {inject.fault}"
            back = next((m.at for m in history.marks
                         if m.name == ready_mark(dependency) and m.at >= heal.at), heal.at)
            if _covering(history, watch.node, inject.started_at, back + bound) is None:
                judged.add(Verdict.UNKNOWN, f"{where}: the watch did not span the outage and "
                           f"{bound:g} s after it")
                continue
            down = next((s for s in detailed if s.at >= inject.started_at and s.status == 503
                         and dependency in _failed_names(s.body)), None)
            up = next((s for s in detailed if s.at >= heal.started_at and s.status == 200), None)
            problems = []
            down_s = (down.at - inject.at) if down else None
            up_s = (up.at - back) if up else None
            if down_s is None:
                seen = sorted({str(s.status) for s in detailed if inject.at <= s.at <= back})
                problems.append(f"never 503 naming {dependency} (observed {', '.join(seen)})")
            elif down_s > bound:
                problems.append(f"503 {down_s:.3f} s after {dependency} went down, expected within "
                                f"{bound:.3f} s")
            if up_s is None:
                problems.append(f"not 200 again after {dependency} was back")
            elif up_s > bound:
                problems.append(f"200 {up_s:.3f} s after {dependency} was back, expected within "
                                f"{bound:.3f} s")
            shown = [f"503 after {down_s:.3f} s" if down_s is not None else "no 503",
                     f"200 {up_s:.3f} s after it was back" if up_s is not None else "no 200"]
            judged.add(Verdict.FAIL if problems else Verdict.PASS,
                       f"{where}: {', '.join(shown)}"
                       + (": " + "; ".join(problems) if problems else ""))
            judged.values += [(f"{inject.fault}_down_s",
                               down_s if down_s is not None else float("inf")),
                              (f"{inject.fault}_up_s", up_s if up_s is not None else float("inf"))]
    expected = (f"/health/detailed 503 naming {dependency} within {bound:.3f} s of it going "
                f"down, and 200 within {bound:.3f} s of it being back")
    derivation = ("a detailed answer waits at most the dependency timeout "
                  "(LAB_DEPENDENCY_TIMEOUT_S = BackendConfig.dependency_timeout_s = "
                  f"{dependency_timeout_s:g} s) for {dependency}; the watcher sends the next "
                  f"request a pause after the previous answer (the longest it paused: "
                  f"{interval:.3f} s) and a healthy answer takes what its longest 200 took "
                  f"({late:.3f} s), both measured on its own samples: bound = pause + "
                  f"dependency_timeout + answer = {interval:.3f} + {dependency_timeout_s:g} + "
                  f"{late:.3f} = {bound:.3f} s, from the fault in effect (stop or freeze "
                  f"returned) and from {dependency} answering its readiness probe again")
    return judged.result(DETAILED_TIMING, expected, derivation,
                         f"no healed outage of {dependency} during a watch")


# -- registration -------------------------------------------------------------------------------


class HealthTimingParams(CheckParams):
    pass


def contract_problem(sample: HealthSample, always_ok: tuple[str, ...],
                     unready: tuple[str, ...]) -> str | None:
    """What the objective's contract finds wrong with one answer, None when it holds (or the
    path is not in the objective)."""
    failed = FAILED.get(sample.expectation)
    if failed is None:
        return None
    if sample.path in always_ok:
        return None if sample.status == 200 else f"{sample.status}, wanted 200 always"
    if sample.path not in unready:
        return None
    if not failed:
        return None if sample.status == 200 else f"{sample.status} while healthy, wanted 200"
    if sample.status != 503:
        return f"{sample.status} while {failed[0]} was down, wanted 503"
    if not any(name in sample.body.lower() for name in failed):
        return f"503 without naming {failed[0]}: {sample.body[:80]!r}"
    return None


def _contract_objective(result: CheckResult, objectives: Objectives, ctx: CheckContext,
                        params: NoParams) -> ObjectiveResult:
    wanted = objectives.health_contract
    samples = [s for s in ctx.history.health_samples if s.expectation in FAILED]
    how = ("each backend's answers, asked directly, in each state the scenario put the lab in, "
           "against the objective's contract (a 503 names the dependency when its name is in "
           "the body)")
    judged = [s for s in samples if s.path in (*wanted.always_ok, *wanted.unready_in_outage)]
    if not judged:
        return measured_objective("health_contract", objectives, value=None, passed=None,
                                  measured="no answer of the objective's endpoints sampled",
                                  derivation=how)
    problems = [f"{s.node} {s.path} ({s.expectation}): {problem}" for s in judged
                if (problem := contract_problem(s, wanted.always_ok, wanted.unready_in_outage))]
    outage = [s for s in judged if FAILED[s.expectation] and s.path in wanted.unready_in_outage]
    if not problems and wanted.unready_in_outage and not outage:
        return measured_objective("health_contract", objectives, value=None, passed=None,
                                  measured=f"{len(judged)} answers, none during an outage: the "
                                  "503s were not exercised", derivation=how)
    measured = (f"{len(problems)} of {len(judged)} answers off the contract: {problems[0]}"
                + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                if problems else f"all {len(judged)} answers as the contract says "
                f"({len(outage)} during an outage)")
    return measured_objective("health_contract", objectives, value=float(len(problems)),
                              passed=not problems, measured=measured, derivation=how)


def _contract_predict(ctx: CheckContext, params: NoParams,
                      objectives: Objectives) -> Prediction:
    wanted = objectives.health_contract
    differs = [f"{path}: contract {CONTRACT['redis-down'].get(path, 'no such endpoint')} in an "
               "outage" for path in wanted.unready_in_outage
               if CONTRACT["redis-down"].get(path) != 503]
    differs += [f"{path}: contract {CONTRACT['redis-down'].get(path, 'no such endpoint')} in an "
                "outage, wanted 200" for path in wanted.always_ok
                if CONTRACT["redis-down"].get(path) != 200]
    return Prediction("health_contract", NAME, threshold_text(objectives, "health_contract"),
                      "as the contract says" if not differs else "; ".join(differs),
                      None if not differs else False,
                      "the backend's documented contract (images/backend/README.md); whether a "
                      "503 names the dependency shows only in its answers")


register(CheckDef(
    name=NAME, params=NoParams, judge=lambda ctx, params: check_health_contract(ctx.history),
    summary="each backend's four health endpoints, asked directly, answer as the contract says "
            "for the state the lab was in",
    objectives=(ObjectiveHook("health_contract", _contract_objective, _contract_predict),)))
register(CheckDef(
    name=STARTUP, params=NoParams, judge=lambda ctx, params: check_ready_at_startup(ctx.history),
    summary="a restarted backend answers /health/ready 503 before its first 200"))


def _drain(ctx: CheckContext, params: HealthTimingParams) -> CheckResult:
    return check_ready_while_draining(ctx.history, drain_s=ctx.expectations.backend.drain_s)


register(CheckDef(
    name=DRAIN, params=HealthTimingParams, judge=_drain,
    summary="after SIGTERM, /health/ready answers 503 through the drain while /health/live "
            "stays 200"))


def _detailed(ctx: CheckContext, params: HealthTimingParams) -> CheckResult:
    return check_detailed_follows_dependency(
        ctx.history, dependency_timeout_s=ctx.expectations.backend.dependency_timeout_s)


register(CheckDef(
    name=DETAILED_TIMING, params=HealthTimingParams, judge=_detailed,
    summary="/health/detailed turns 503 and back within the watcher's measured pause + "
            "dependency_timeout + a healthy answer of Redis going and coming back"))
