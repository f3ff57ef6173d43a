"""Latency: every request sent while a fault was in place took no longer than its own tries
explain, by the configuration NGINX runs.

A request's bound is built from its tries, as NGINX's log lists them (``lab.checks.outcomes``):
a failed try costs the timeout configured for it (``proxy_connect_timeout`` for a connect,
``proxy_read_timeout`` once connected; the ejection replay holds each to that value), a try on a
frozen backend at most ``proxy_read_timeout`` (it may thaw and answer inside it), a try on a
slowed link the injected delay on top of a healthy try, and a healthy try what NGINX took
($request_time) over the answers that never met the fault (their longest). What an answered
request took is NGINX's own time too: the rest of what the client saw is the lab's client, whose
event loop queues the answers a heal releases together. A request that got no answer exceeds
every bound, unless the configuration makes NGINX wait longer than the client does (the client
gives up while NGINX is still inside a configured timeout).

Outside faults the configuration bounds nothing: how fast a healthy answer is belongs to the
objectives (``health_latency``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lab.checks.base import CheckResult, ObjectiveResult, Prediction, Verdict
from lab.checks.ejection import pool_replay
from lab.checks.outcomes import Explainer
from lab.checks.outcomes import fault_windows as outcome_windows
from lab.checks.registry import (
    CheckContext,
    CheckDef,
    ClientParams,
    ObjectiveHook,
    measured_objective,
    register,
)
from lab.checks.upstream_replay import AttemptEnd, Request
from lab.expectations import Expectations, UpstreamPolicy, cost_derivation, failed_attempt_cost
from lab.history import AccessLogEntry, History, Outcome, RequestRecord
from lab.objectives import Objectives, threshold_text
from lab.stats import nearest_rank
from lab.units import text_seconds

NAME = "latency"
SHOWN = 3


def fault_windows(history: History) -> list[tuple[float, float]]:
    """Each fault from the moment its inject was issued (it takes effect somewhere before the
    action returns) until it is over: its heal, or, for a fault that stopped the node, the
    moment the node was ready again (until then requests routed to it still fail)."""
    return [(start, until) for _, start, until in outcome_windows(history)]


def _inside(windows: Sequence[tuple[str, float, float]], t: float) -> list[str]:
    return [node for node, start, until in windows if start <= t < until]


# NGINX logs a try's time to the millisecond, and reads its clock on both ends.
LOG_RESOLUTION_S = 0.002


def try_allowance(pool: Request, located: UpstreamPolicy, faulted: Sequence[str]) -> float:
    """What a request's tries on failing or slowed backends may cost by the configuration: a
    try that waited on a failing or slowed backend what it waited, at most its timers
    (``proxy_connect_timeout`` until connected, ``proxy_read_timeout`` after): a slow link or
    a thawing backend may hold a try that long and no longer, whatever the fault injected.
    A healthy try costs what NGINX logged for it: a retry that a heal releases together with
    dozens of others meets a busier backend than any answer outside the fault (measured: 25 ms
    against a 17 ms healthy maximum on a public ip_hash config), and its time is the backend's,
    not a decision of NGINX's."""
    total = 0.0
    for a in pool.attempts:
        failing = a.backend in faulted or a.end is not AttemptEnd.RESPONSE
        if not failing:
            total += a.duration_s + LOG_RESOLUTION_S
            continue
        connect = located.connect_timeout_s
        if a.connect_s is None:
            timers = connect
        else:
            timers = min(a.connect_s, connect) + located.read_timeout_s
        # The logged time is truncated to the millisecond at both ends: the try may have taken
        # up to that much longer than logged (never longer than its timers allow).
        total += min(a.duration_s, timers) + LOG_RESOLUTION_S
    return total


def _touches(pool: Request | None, faulted: Sequence[str]) -> bool:
    return pool is not None and any(a.backend in faulted or a.end is not AttemptEnd.RESPONSE
                                    for a in pool.attempts)


def chance_allowance(inside: int, outside: int, risk: float = 0.001) -> int:
    """How many healthy answers during the faults may exceed the longest one outside them by
    chance alone: with exchangeable samples, the ``j`` longest of all are all inside with
    probability about (inside / (inside + outside)) ** j; the allowance keeps that below
    ``risk``."""
    if inside == 0:
        return 0
    share = inside / (inside + outside)
    if share >= 1:
        return inside
    return max(0, math.ceil(math.log(risk) / math.log(share)) - 1)


def _served(request: RequestRecord, entry: AccessLogEntry | None) -> float:
    """How long the topology took over an answered request: NGINX's own $request_time where it
    logged it. The rest of what the client saw is the lab's own client: answers released
    together (the hung tries a heal ends, dozens in one millisecond) queue in its event loop,
    which no answer outside a fault ever meets (measured: 9 ms over a 6 ms healthy maximum
    on a single-server corpus config). The client's time stands where NGINX logged nothing."""
    assert request.latency_s is not None
    return entry.request_time_s if entry is not None else request.latency_s


def _overhead(request: RequestRecord, entry: AccessLogEntry | None) -> float:
    """What NGINX took over a request beyond its tries' own logged times (reading the request,
    choosing, writing the answer); the client's time where NGINX logged nothing."""
    if entry is None:
        return request.latency_s or 0.0
    return max(0.0, entry.request_time_s - sum(t or 0.0 for t in entry.upstream_times_s))


def check_latency(history: History, expectations: Expectations,
                  added_latency_s: float = 0.0) -> CheckResult:
    """Whether each request during a fault took no longer than its own tries explain."""
    windows = outcome_windows(history)
    outside = [r for r in history.requests if r.outcome is Outcome.OK and r.latency_s is not None
               and not _inside(windows, r.sent_at)]
    inside = [r for r in history.requests if _inside(windows, r.sent_at)]
    expected = ("each request during a fault within the cost of its own tries: the timeout "
                "configured for each failed try, the fault's own delay, and healthy tries as "
                "measured outside the faults")
    values: list[tuple[str, float]] = [("inside_n", float(len(inside))),
                                       ("outside_n", float(len(outside)))]
    if outside:
        out50 = nearest_rank([r.latency_s for r in outside if r.latency_s is not None], 0.5)
        out99 = nearest_rank([r.latency_s for r in outside if r.latency_s is not None], 0.99)
        values += [("outside_p50_s", out50), ("outside_p99_s", out99)]
        measured = f"outside p50 {out50:.3f} s p99 {out99:.3f} s (n={len(outside)})"
    else:
        measured = "no ok request outside the faults"
    if not windows:
        return CheckResult(NAME, Verdict.UNKNOWN, measured + "; no fault", expected,
                           "without a fault the configuration bounds no latency",
                           values=tuple(values))
    if not outside:
        return CheckResult(NAME, Verdict.UNKNOWN, measured, expected, "healthy tries are "
                           "measured outside the faults; there were none", values=tuple(values))
    nginx = expectations.nginx
    pool_policy = nginx.upstream

    def policy_for(uri: str) -> UpstreamPolicy:
        found = nginx.upstream_for(uri.split("?", 1)[0])
        return found if found is not None and found.name == pool_policy.name else pool_policy

    explain = Explainer(history, pool_replay(history, expectations), policy_for,
                        rate_limit_status=nginx.rate_limit_status)
    unexplained: list[str] = []
    latencies: list[float] = []
    unanswered = 0
    control: list[float] = []
    treated: list[tuple[RequestRecord, Request, float]] = []
    for r in inside:
        if r.latency_s is None:
            unanswered += 1
            latencies.append(math.inf)
            outcome = explain.explain(r)
            if outcome is None or not outcome.explained:
                why = outcome.detail if outcome else "never logged"
                unexplained.append(f"{r.method} {r.path} +{r.sent_at - inside[0].sent_at:.3f} "
                                   f"s: no answer ({why})")
            continue
        latencies.append(r.latency_s)
        entry = explain.entry(r)
        pool = explain.pool_request(entry) if entry is not None else None
        faulted = _inside(windows, r.sent_at)
        if not _touches(pool, faulted):
            control.append(_overhead(r, entry))
            continue
        assert pool is not None and entry is not None
        allowance = try_allowance(pool, policy_for(r.path), faulted)
        treated.append((r, pool, allowance))
    # The noise a fault brings to every answer (the fault's own action competing for the CPU,
    # a dependency's slowness) shows in the answers that never met the failing backend.
    healthy = max(control) if control else max(_overhead(r, explain.entry(r)) for r in outside)
    reference = len(control) if control else len(outside)
    over = []
    largest = 0.0
    for r, pool, allowance in treated:
        largest = max(largest, allowance + healthy)
        took = _served(r, explain.entry(r))
        if took - allowance > healthy:
            tries = ", ".join(f"{a.backend} {a.end.value} {a.duration_s:.3f} s"
                              for a in pool.attempts)
            over.append(f"{r.method} {r.path} took {took:.3f} s > {allowance:.3f} s + "
                        f"{healthy:.3f} s ({tries})")
    allowed = chance_allowance(len(treated), reference)
    derivation = (f"a request that met the failing backend: for each failed try the timeout "
                  f"configured for it (connect {pool_policy.connect_timeout_s:g} s, read "
                  f"{pool_policy.read_timeout_s:g} s; what it waited, at most that)"
                  + (f", the injected {added_latency_s:g} s on the slowed link"
                     if added_latency_s else "")
                  + ", each healthy try what NGINX logged for it, plus the longest time NGINX "
                  "spent beyond its tries over the answers that never met it during the faults "
                  f"({healthy:.3f} s, n={reference}{'' if control else ', outside the faults'}"
                  f"); up to {allowed} above that by chance alone ({len(treated)} against "
                  f"{reference}: the {allowed + 1} longest all among them has odds under 1 in "
                  "1000); a no-answer exceeds every bound unless the client gave up inside a "
                  "wait NGINX is configured to make")
    values += [("inside_bound_max_s", largest), ("unanswered", float(unanswered)),
               ("over_bound", float(len(over))), ("chance_allowance", float(allowed)),
               ("unexplained_unanswered", float(len(unexplained)))]
    listed = unexplained + over
    details = list(listed[:SHOWN]) + ([f"... and {len(listed) - SHOWN} more"]
                                      if len(listed) > SHOWN else [])
    verdict = Verdict.FAIL if unexplained or len(over) > allowed else Verdict.PASS
    if latencies:
        in50, in99 = nearest_rank(latencies, 0.5), nearest_rank(latencies, 0.99)
        shown = "no answer" if math.isinf(in99) else f"{in99:.3f} s"
        values += [("inside_p50_s", in50)] + ([("inside_p99_s", in99)]
                                               if not math.isinf(in99) else [])
        measured += (f"; inside p50 {in50:.3f} s p99 {shown} (n={len(latencies)}, "
                     f"{unanswered} unanswered)")
        answered = [x for x in latencies if not math.isinf(x)]
        if added_latency_s and answered and nearest_rank(answered, 0.99) < added_latency_s / 2:
            verdict = Verdict.FAIL
            details.append(f"inside p99 {nearest_rank(answered, 0.99):.3f} s < "
                           f"{added_latency_s / 2:.3f} s: the injected latency did not reach "
                           "the clients")
    else:
        measured += "; no request during the faults"
        verdict = Verdict.UNKNOWN
    measured += (f"; {len(over)} beyond what their tries explain (chance allows {allowed}), "
                 f"{len(unexplained)} unanswered against the configuration")
    return CheckResult(NAME, verdict, measured, expected, derivation, tuple(details),
                       tuple(values))


# -- registration -------------------------------------------------------------------------------

HEALTH_PATH = "/health"


class LatencyParams(ClientParams):
    pass


def _judge(ctx: CheckContext, params: LatencyParams) -> CheckResult:
    return check_latency(ctx.history, ctx.expectations, added_latency_s=ctx.added_latency_s)


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
    value = nearest_rank(served, q / 100)
    client = nearest_rank([r.latency_s for r in steady if r.latency_s is not None], q / 100)
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
    value = nearest_rank([math.inf if r.latency_s is None else r.latency_s for r in inside], 0.99)
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
    summary="each request during a fault within what its own tries cost by the configuration "
            "(failed tries their timeouts, healthy ones as measured outside the faults)",
    objectives=(ObjectiveHook("health_latency", _health_objective, _health_predict),
                ObjectiveHook("failing_latency", _failing_objective, _failing_predict))))
