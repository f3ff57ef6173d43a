"""Latency inside and outside fault windows.

Outside faults the p99 must stay under a stated bound. A fault lasts from its inject until
its heal, or, when it stopped the node, until the node is ready again. Inside, a request
that first tried the failed backend pays one failed attempt ``c`` before NGINX retries it
elsewhere, so the p99 may grow by ``c`` and no more. A latency fault adds ``added`` (the
injected round trip) to the requests it slows: the inside p99 must then reach at least half
of it (else the fault never took effect) and stay within
``c + added + outside p99 + tolerance``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

from pydantic import Field

from lab.checks.base import CheckResult, ObjectiveResult, Prediction, Verdict, never_crashes
from lab.checks.ejection import cost_derivation, failed_attempt_cost
from lab.checks.registry import (
    CheckContext,
    CheckDef,
    ClientParams,
    ObjectiveHook,
    measured_objective,
    register,
)
from lab.expectations import FailureMode, UpstreamPolicy
from lab.history import History, Outcome, ready_mark
from lab.objectives import Objectives, text_seconds, threshold_text

NAME = "latency"


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of non-empty ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def fault_windows(history: History) -> list[tuple[float, float]]:
    """Each fault from the moment its inject was issued (it takes effect somewhere before the
    action returns) until it is over: its heal, or, for a fault that stopped the node, the
    moment the node was ready again (until then requests routed to it still fail)."""
    end = max((r.sent_at for r in history.requests), default=0.0) + 1.0
    windows = []
    for inject, heal in history.fault_windows():
        if heal is None:
            windows.append((inject.started_at, end))
            continue
        ready = [m.at for m in history.marks
                 if m.name == ready_mark(heal.target) and m.at >= heal.at]
        windows.append((inject.started_at, min(ready) if ready else heal.at))
    return windows


@never_crashes(NAME)
def check_latency(history: History, policy: UpstreamPolicy, mode: FailureMode | None,
                  outside_p99_bound_s: float = 0.5, tolerance_s: float = 0.5,
                  added_latency_s: float = 0.0) -> CheckResult:
    """Whether ok-request p99 stays bounded outside faults and within one failed try inside."""
    windows = fault_windows(history)
    inside: list[float] = []
    outside: list[float] = []
    for r in history.requests:
        if r.outcome is not Outcome.OK or r.latency_s is None:
            continue
        during = any(start <= r.sent_at < stop for start, stop in windows)
        (inside if during else outside).append(r.latency_s)
    c = failed_attempt_cost(policy, mode)
    values: list[tuple[str, float]] = [("inside_n", float(len(inside))),
                                       ("outside_n", float(len(outside))), ("c_s", c)]
    if not outside:
        return CheckResult(NAME, Verdict.UNKNOWN, "no ok request outside fault windows",
                           f"outside p99 <= {outside_p99_bound_s:g} s",
                           "the inside bound is relative to the outside p99")
    out50, out99 = percentile(outside, 0.5), percentile(outside, 0.99)
    inside_bound = c + added_latency_s + out99 + tolerance_s
    values += [("outside_p50_s", out50), ("outside_p99_s", out99), ("inside_bound_s", inside_bound)]
    derivation = (f"outside p99 bound {outside_p99_bound_s:g} s (stated); "
                  f"{cost_derivation(policy, mode)}; "
                  f"added = {added_latency_s:g} s injected round trip; "
                  f"inside p99 <= c + added + outside p99 + tolerance = "
                  f"{c:g} + {added_latency_s:g} + {out99:.3f} + {tolerance_s:g} = "
                  f"{inside_bound:.3f} s (one failed attempt before the retry)")
    expected = f"outside p99 <= {outside_p99_bound_s:g} s; inside p99 <= {inside_bound:.3f} s"
    if added_latency_s:
        expected += f" and >= {added_latency_s / 2:.3f} s (the injected latency shows)"
    measured = f"outside p50 {out50:.3f} s p99 {out99:.3f} s (n={len(outside)})"
    details: list[str] = []
    verdict = Verdict.PASS
    if out99 > outside_p99_bound_s:
        verdict = Verdict.FAIL
        details.append(f"outside p99 {out99:.3f} s > {outside_p99_bound_s:g} s")
    if inside:
        in50, in99 = percentile(inside, 0.5), percentile(inside, 0.99)
        values += [("inside_p50_s", in50), ("inside_p99_s", in99)]
        measured += f"; inside p50 {in50:.3f} s p99 {in99:.3f} s (n={len(inside)})"
        if in99 > inside_bound:
            verdict = Verdict.FAIL
            details.append(f"inside p99 {in99:.3f} s > {inside_bound:.3f} s")
        if added_latency_s and in99 < added_latency_s / 2:
            verdict = Verdict.FAIL
            details.append(f"inside p99 {in99:.3f} s < {added_latency_s / 2:.3f} s: "
                           "the injected latency did not reach the clients")
    elif windows:
        measured += "; no ok request inside the fault windows"
        if verdict is Verdict.PASS:
            verdict = Verdict.UNKNOWN
    return CheckResult(NAME, verdict, measured, expected, derivation, tuple(details),
                       tuple(values))


# -- registration -------------------------------------------------------------------------------

HEALTH_PATH = "/health"


class LatencyParams(ClientParams):
    outside_p99_bound_s: Annotated[float, Field(gt=0)] = 0.5
    tolerance_s: Annotated[float, Field(ge=0)] = 0.5


def _judge(ctx: CheckContext, params: LatencyParams) -> CheckResult:
    return check_latency(ctx.history, ctx.expectations.upstream, ctx.first_failure_mode,
                         outside_p99_bound_s=params.outside_p99_bound_s,
                         tolerance_s=params.tolerance_s, added_latency_s=ctx.added_latency_s)


def _health_objective(result: CheckResult, objectives: Objectives, ctx: CheckContext,
                      params: LatencyParams) -> ObjectiveResult | None:
    health = [r for r in ctx.history.requests if r.path == HEALTH_PATH and r.method == "GET"]
    if not health:
        return None  # the objective is about /health; this stream asks something else
    windows = fault_windows(ctx.history)
    steady = [r for r in health if r.outcome is Outcome.OK and r.latency_s is not None
              and not any(start <= r.sent_at < stop for start, stop in windows)]
    # NGINX's own $request_time for each of them: the topology's time to answer. The lab's
    # client shares a Python process with the runner, and its scheduling adds milliseconds
    # that a single curl does not see (docs/objectives.md, health_latency).
    logged = {e.request_id: e.request_time_s for e in ctx.history.access_log if e.request_id}
    served = [logged[r.request_id] for r in steady if r.request_id in logged]
    q = objectives.health_latency_percentile
    how = (f"p{q:g} of NGINX's $request_time for GET /health answered ok outside every fault "
           f"window (healthy steady state, {len(served)} of {len(steady)} requests in the log)")
    if not served:
        return measured_objective("health_latency", objectives, value=None, passed=None,
                                  measured="no healthy steady-state answer in NGINX's log",
                                  derivation=how)
    value = percentile(served, q / 100)
    client = percentile([r.latency_s for r in steady if r.latency_s is not None], q / 100)
    return measured_objective("health_latency", objectives, value=value,
                              passed=value < objectives.health_latency,
                              measured=f"p{q:g} {text_seconds(round(value, 6))} at NGINX "
                              f"(the lab's client saw {text_seconds(round(client, 4))})",
                              derivation=how)


def _failing_objective(result: CheckResult, objectives: Objectives, ctx: CheckContext,
                       params: LatencyParams) -> ObjectiveResult | None:
    windows = fault_windows(ctx.history)
    if not windows:
        return None  # nothing failed: there is no "while failing" to judge
    inside = [r for r in ctx.history.requests
              if any(start <= r.sent_at < stop for start, stop in windows)]
    how = ("p99 of every request sent while a fault was in place, answered or not (a request "
           f"never answered counts as longer than any answer; {len(inside)} requests)")
    if not inside:
        return measured_objective("failing_latency", objectives, value=None, passed=None,
                                  measured="no request sent during the faults", derivation=how)
    value = percentile([math.inf if r.latency_s is None else r.latency_s for r in inside], 0.99)
    shown = "no answer" if math.isinf(value) else text_seconds(round(value, 4))
    return measured_objective("failing_latency", objectives,
                              value=None if math.isinf(value) else value,
                              passed=value <= objectives.failing_latency, measured=f"p99 {shown}",
                              derivation=how)


def _health_predict(ctx: CheckContext, params: LatencyParams,
                    objectives: Objectives) -> Prediction | None:
    _, path = ctx.stream_paths.get(params.client or "", ("GET", HEALTH_PATH))
    if path != HEALTH_PATH:
        return None
    return Prediction("health_latency", NAME, threshold_text(objectives, "health_latency"),
                      "set by the machine, not the configuration", None,
                      "a healthy /health answer costs one proxied round trip; nothing in the "
                      "configuration bounds it")


def _failing_predict(ctx: CheckContext, params: LatencyParams,
                     objectives: Objectives) -> Prediction | None:
    policy = ctx.expectations.upstream
    failing = {node: mode for node, mode in ctx.failure_modes.items() if node in policy.servers}
    if not failing and not ctx.added_latency_s:
        return None
    if any(mode is None for mode in failing.values()):
        # A slowed link (throttle, latency) fails nothing: what it adds is the injected delay,
        # known once the fault is in place, and bounded by the conformance check.
        return Prediction("failing_latency", NAME, threshold_text(objectives, "failing_latency"),
                          "the injected delay plus a normal answer", None,
                          "a slowed backend is never ejected (its tries succeed, late): "
                          "measured only")
    worst = max((failed_attempt_cost(policy, mode) for mode in failing.values()), default=0.0)
    mode = next((m for m in failing.values() if failed_attempt_cost(policy, m) == worst), None)
    predicted = worst + ctx.added_latency_s
    retried = policy.ejects or len(policy.servers) > 1
    return Prediction("failing_latency", NAME, threshold_text(objectives, "failing_latency"),
                      f"p99 about {text_seconds(predicted)} plus a normal answer",
                      predicted <= objectives.failing_latency if retried else None,
                      f"{cost_derivation(policy, mode)}; a request that tried the failing backend "
                      f"first waits c, then is answered by another"
                      + (f"; + {ctx.added_latency_s:g} s injected" if ctx.added_latency_s else ""))


register(CheckDef(
    name=NAME, params=LatencyParams, judge=_judge,
    summary="p50/p99 outside and inside fault windows: inside, one failed try (c) at most on top",
    objectives=(ObjectiveHook("health_latency", _health_objective, _health_predict),
                ObjectiveHook("failing_latency", _failing_objective, _failing_predict))))
