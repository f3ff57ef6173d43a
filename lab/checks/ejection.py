"""Ejection: whether NGINX took a failed backend out of rotation as its configuration says.

The judgement replays NGINX's own counters from its access log (``upstream_replay``): each
try that fails is counted when it ends, a server with ``max_fails`` counted failures is
skipped until ``fail_timeout`` whole seconds have passed, and every routing decision NGINX
made (which server each try went to, whether a failed try was retried, how long a timed-out
try waited) is held against the configuration NGINX runs. A decision the configuration does
not allow is a failure; one the log's millisecond timing cannot settle is never counted
against NGINX. No window is guessed from the request rate: that window is only the
prediction stated before the run (``worst_case_ejection_s``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lab.checks.base import CheckResult, Measured, ObjectiveResult, Prediction, Verdict
from lab.checks.registry import (
    After,
    CheckContext,
    CheckDef,
    CheckParams,
    ObjectiveHook,
    TimelineMark,
    measured_objective,
    register,
)
from lab.checks.upstream_replay import AttemptEnd, Replay, Violation, replay
from lab.expectations import (
    Expectations,
    FailureMode,
    UpstreamPolicy,
    cost_derivation,
    failed_attempt_cost,
    worst_case_ejection_s,
)
from lab.history import FaultEvent, History, RequestRecord
from lab.objectives import Objectives, threshold_text

NAME = "ejection"
# How many of the decisions against the configuration a result lists.
SHOWN = 3


# Which proxy_next_upstream conditions a failure of each mode raises in NGINX.
_RETRY_CONDITIONS = {
    FailureMode.REFUSED: ("error",),
    FailureMode.UNREACHABLE: ("error", "timeout"),  # EHOSTUNREACH is an error, silence a timeout
    FailureMode.FROZEN: ("timeout",),
}


def observation_end(history: History) -> float | None:
    """The last instant the history saw traffic (access log or client), if any."""
    times = [e.msec for e in history.access_log]
    times += [r.finished_at or r.sent_at for r in history.requests]
    return max(times) if times else None


def first_fault_window(history: History,
                       target: str) -> tuple[FaultEvent, FaultEvent | None] | None:
    """The first inject/heal pair on ``target`` (heal None while still active)."""
    windows = history.fault_windows(target)
    return windows[0] if windows else None


def requests_between(requests: Sequence[RequestRecord], start: float,
                     end: float) -> list[RequestRecord]:
    """Client requests that left in [start, end)."""
    return [r for r in requests if start <= r.sent_at < end]



def pool_replay(history: History, expectations: Expectations) -> Replay:
    """The backend pool's counters replayed over the run's whole access log, each request
    judged against the settings of the location that served it."""
    nginx = expectations.nginx
    pool = nginx.upstream

    def policy_for(uri: str) -> UpstreamPolicy:
        found = nginx.upstream_for(uri.split("?", 1)[0])
        return found if found is not None and found.name == pool.name else pool

    first = min((f.started_at for f in history.faults), default=None)
    key = (id(history), id(expectations), len(history.access_log), len(history.faults))
    cached = _CACHE.get(key)
    if cached is None:
        cached = replay(history.access_log, pool, policy_for=policy_for, learned_until=first)
        _CACHE.clear()
        _CACHE[key] = cached
    return cached


# One run's checks share one replay (ejection, readmission, availability and latency read it).
_CACHE: dict[tuple[int, int, int, int], Replay] = {}


def violation_lines(violations: Sequence[Violation], origin: float) -> tuple[str, ...]:
    """The first few decisions against the configuration, as lines (times from ``origin``)."""
    lines = [f"+{v.at - origin:.3f} s {v.kind.value}: {v.detail}" for v in violations[:SHOWN]]
    if len(violations) > SHOWN:
        lines.append(f"... and {len(violations) - SHOWN} more")
    return tuple(lines)


def expected_text(policy: UpstreamPolicy, target: str) -> str:
    """What the configuration says NGINX does with a failing ``target``, in one sentence."""
    server = policy.peer(target)
    if server.max_fails == 0 or policy.single:
        why = ("max_fails=0 counts no failure" if server.max_fails == 0
               else "a single server is never skipped")
        return f"{target} never taken out of rotation ({why})"
    retry = " ".join(policy.next_upstream) or "off"
    if policy.next_upstream_tries:
        retry += f", tries {policy.next_upstream_tries}"
    return (f"{target} in rotation until max_fails={server.max_fails} failures count, then out "
            f"for fail_timeout={server.fail_timeout_s:g} s; {policy.balancing} turns kept; "
            f"failed tries retried per proxy_next_upstream {retry}; timeouts "
            f"{policy.connect_timeout_s:g} s connect, {policy.read_timeout_s:g} s read")


@dataclass(frozen=True)
class _Ejection:
    counted_at: float | None       # when the replay's counters reached max_fails (or None)
    last_routed: float | None      # the start of the last try routed to it before that
    failures: int                  # failures counted in the window
    abandoned: int                 # tries the client gave up on: counted nothing


def _ejection(r: Replay, target: str, start: float, end: float) -> _Ejection:
    """When the counters took ``target`` out of rotation: in every counter domain (each worker
    without a zone) that routed to it, the failure that reached max_fails."""
    server = r.policy.peer(target)
    attempts = [a for a in r.attempts_on(target) if start <= a.started_at < end]
    counted = [c for c in r.changes if c.backend == target and c.counted and start <= c.at < end]
    shared = r.policy.shared_counters
    domains = {0 if shared else a.worker for a in attempts}
    reached: dict[int, float] = {}
    for change in counted:
        domain = 0 if shared else change.domain
        if server.max_fails and change.fails >= server.max_fails and domain not in reached:
            reached[domain] = change.at
    counted_at = max(reached.values()) if reached and set(reached) >= domains else None
    last = None
    if counted_at is not None:
        before = [a for a in attempts if a.started_at <= counted_at + a.slack_s]
        last = before[-1].started_at if before else None
    abandoned = sum(a.end is AttemptEnd.ABANDONED for a in attempts)
    return _Ejection(counted_at, last, len(counted), abandoned)


def check_ejection(history: History, expectations: Expectations, target: str) -> CheckResult:
    """Whether NGINX routed to, skipped and retried around a failed ``target`` exactly as its
    configuration's counters, balancer and timeouts say, replayed from its access log."""
    window = first_fault_window(history, target)
    policy = expectations.upstream
    expected = expected_text(policy, target)
    if window is None:
        return CheckResult(NAME, Verdict.UNKNOWN, f"no inject event for {target}", expected,
                           "the history has no fault on this target to time from")
    inject, heal = window
    if target not in policy.servers:
        return CheckResult(NAME, Verdict.UNKNOWN, f"{target} is not a primary server of upstream "
                           f"{policy.name!r}", expected, f"servers: {', '.join(policy.servers)}")
    end = heal.at if heal is not None else observation_end(history)
    if end is None or end <= inject.at:
        return CheckResult(NAME, Verdict.UNKNOWN, "no traffic after the fault", expected,
                           "nothing to judge the ejection by")
    r = pool_replay(history, expectations)
    start = inject.started_at
    attempts = [a for a in r.attempts_on(target) if start <= a.started_at < end]
    server = policy.peer(target)
    never = server.max_fails == 0 or policy.single
    found = _ejection(r, target, start, end)
    # Every fault window on the target is judged (a crash loop ejects it again); the first
    # one's ejection is the one measured.
    spans = [(i.started_at, h.at if h is not None else end)
             for i, h in history.fault_windows(target)]
    mine = [v for v in r.violations if v.backend == target
            and any(a <= v.at < b for a, b in spans)]
    judged = [d for d in r.requests if any(start <= a.started_at < end for a in d.attempts)]
    sharing = "shared (zone)" if policy.shared_counters else "per worker process"
    endings = ", ".join(f"{n} {kind.value}" for kind in AttemptEnd
                        if (n := sum(a.end is kind for a in attempts)))
    derivation = [
        (f"replayed {r.judged} routing decisions of the pool from NGINX's access log, "
         f"{r.ambiguous} left open by the log's millisecond timing; balancer: "
         f"{r.balancer_note}"),
        f"counters {sharing}: {', '.join(str(d) for d in r.domains)}",
        f"{len(attempts)} tries routed to {target} during the first fault: {endings}"
        + (f"; {len(spans)} fault windows judged" if len(spans) > 1 else ""),
        f"{found.failures} failures counted against it"
        + (f" ({found.abandoned} tries ended by the client giving up, which NGINX counts as no "
           "failure)" if found.abandoned else ""),
    ]
    values: list[tuple[str, float]] = [
        ("attempts", float(len(attempts))), ("failures_counted", float(found.failures)),
        ("abandoned", float(found.abandoned)), ("violations", float(len(mine))),
        ("decisions", float(r.judged)), ("ambiguous", float(r.ambiguous)),
        ("never_ejects", 1.0 if never else 0.0), ("window_s", end - inject.at),
        ("requests", float(len(judged)))]
    if found.counted_at is not None:
        derivation.append(f"the {server.max_fails}th failure counted at "
                          f"+{found.counted_at - inject.at:.3f} s: skipped from then")
        values += [("ejected", 1.0), ("counted_s", found.counted_at - inject.at)]
        if found.last_routed is not None:
            values.append(("measured_s", found.last_routed - inject.at))
    else:
        values.append(("ejected", 0.0))
    details = violation_lines(mine, inject.at)
    if not attempts:
        return CheckResult(NAME, Verdict.UNKNOWN, f"no try reached {target} during the fault",
                           expected, "; ".join(derivation), details, tuple(values))
    if found.counted_at is not None and found.last_routed is not None:
        measured = (f"out of rotation after {found.failures if never else server.max_fails} "
                    f"counted failures: last try routed +{found.last_routed - inject.at:.3f} s")
    elif never:
        measured = f"kept in rotation throughout the {end - inject.at:.3f} s fault"
    else:
        measured = (f"not ejected during the {end - inject.at:.3f} s fault: {found.failures} of "
                    f"max_fails={server.max_fails} failures counted")
    measured += f"; {len(mine)} decisions against the configuration"
    if not r.balancer_judged:
        # What is left unjudged is said, not passed over: a skip that was due cannot be told.
        measured += f" (whether it was skipped early is not judged: {policy.balancing})"
        values.append(("balancer_judged", 0.0))
    verdict = Verdict.FAIL if mine else Verdict.PASS
    return CheckResult(NAME, verdict, measured, expected, "; ".join(derivation), details,
                       tuple(values))


# -- registration -------------------------------------------------------------------------------


class EjectionParams(CheckParams):
    target: str


def _judge(ctx: CheckContext, params: EjectionParams) -> CheckResult:
    return check_ejection(ctx.history, ctx.expectations, ctx.node(params.target))


def _describe(ctx: CheckContext, params: EjectionParams) -> str:
    return expected_text(ctx.expectations.upstream, ctx.node(params.target))


def _objective(result: CheckResult, objectives: Objectives, ctx: CheckContext,
               params: EjectionParams) -> ObjectiveResult:
    limit = objectives.ejection
    ejected, measured = result.value("ejected"), result.value("measured_s")
    window = result.value("window_s")
    how = "the last attempt NGINX routed to the failed backend after the fault (access log)"
    if ejected == 1.0 and measured is not None:
        return measured_objective("ejection", objectives, value=measured, passed=measured <= limit,
                                  measured=f"out of rotation {measured:.3f} s after the fault",
                                  derivation=how)
    if ejected == 0.0 and window is not None:
        confirmed_never = result.value("never_ejects") == 1.0 and result.verdict is Verdict.PASS
        if confirmed_never or window >= limit:
            why = (" (its configuration never ejects, and the traffic confirmed it)"
                   if confirmed_never else "")
            return measured_objective("ejection", objectives, value=None, passed=False,
                                      measured=f"never ejected: routed to throughout the "
                                      f"{window:.3f} s fault{why}", derivation=how)
    return measured_objective("ejection", objectives, value=None, passed=None,
                              measured=f"not measured ({result.measured})", derivation=how)


def _predict(ctx: CheckContext, params: EjectionParams, objectives: Objectives) -> Prediction:
    policy = ctx.expectations.upstream
    node = ctx.node(params.target)
    mode = ctx.failure_modes.get(node) or FailureMode.UNREACHABLE
    threshold = threshold_text(objectives, "ejection")
    if node in ctx.failure_modes and ctx.failure_modes[node] is None:
        # A fault that slows the target (CPU, bandwidth, latency) leaves its tries answered:
        # nothing is counted unless an answer outlasts proxy_read_timeout.
        return Prediction("ejection", NAME, threshold, "not ejected while it answers", None,
                          f"the fault on {node} slows its answers; NGINX counts a try only "
                          f"when it fails or outlasts proxy_read_timeout "
                          f"({policy.read_timeout_s:g} s)")
    if not policy.ejects:
        why = ("max_fails = 0 disables failure counting" if policy.max_fails == 0
               else "an upstream with one server never marks it down")
        return Prediction("ejection", NAME, threshold, "never ejected", False, why,
                          low=math.inf, high=math.inf)
    c = failed_attempt_cost(policy, mode)
    if c >= ctx.client_timeout_s:
        return Prediction("ejection", NAME, threshold, "not by timed-out tries", None,
                          f"{cost_derivation(policy, mode)} >= the clients' "
                          f"{ctx.client_timeout_s:g} s: a client gives up first, and NGINX "
                          "counts an abandoned try as no failure (docs/semantics.md §1); "
                          "only tries that fail sooner count "
                          "(for a killed backend, connects failing once the kernel gives up on "
                          "its address: measured 41 s)")
    worst, arithmetic = worst_case_ejection_s(policy, mode, ctx.rate_per_s)
    # g assumes evenly spaced arrivals; each stream's may fall up to one of its periods late
    # (jittered) and counts one short over any window, so the k-th try can come up to two
    # periods per stream later. Round robin over equal, plain server lines with shared counters
    # only: least_conn, hash, weights, backup, down and max_conns route to the failed backend
    # at a pace the rate alone does not give, and without a zone each worker counts the tries
    # the kernel happened to hand it.
    streams = max(1, len(ctx.stream_rates))
    spread = 2 * streams / (ctx.rate_per_s or 1.0)
    even = (policy.balancing == "round_robin" and policy.shared_counters
            and not policy.backup_servers and policy.uniform
            and len(set(policy.weights.values())) <= 1
            and not any(m.down or m.max_conns for m in policy.members))
    return Prediction("ejection", NAME, threshold, f"out of rotation within {worst:.3f} s",
                      worst <= objectives.ejection,
                      f"{arithmetic} = {worst:.3f} s (a {mode.value} backend"
                      + ("; least_conn: a try in progress keeps it the busiest, so its failed "
                         "tries come one after another" if policy.balancing == "least_conn"
                         else "") + ")"
                      + (f"; up to {worst + spread:.3f} s with the arrivals' spread (2 x "
                         f"{streams} streams / {ctx.rate_per_s:g} req/s)" if even else
                         f"; {policy.balancing} over these server lines"
                         + ("" if policy.shared_counters else ", counted per worker")
                         + " routes at its own pace: a guide, not a bound"),
                      high=worst + spread if even else None)


def _measure(result: CheckResult) -> Measured | None:
    """When the backend went out of rotation, after the fault (seconds); kept in rotation
    throughout a window of w seconds is "not before w". Nothing when NGINX's decisions departed
    from its configuration: the replay's ejection time is then not what NGINX did."""
    if result.value("violations"):
        return None
    if result.value("ejected") == 1.0 and (measured := result.value("measured_s")) is not None:
        return Measured.exactly(measured, f"{measured:.3f} s")
    window = result.value("window_s")
    if result.value("ejected") == 0.0 and window is not None and result.value("attempts"):
        return Measured(window, math.inf, f"kept in rotation throughout {window:.3f} s")
    return None


register(CheckDef(
    name=NAME, params=EjectionParams, judge=_judge, describe=_describe, client_filter=False,
    label=lambda p: f"{NAME} {p.target}", marker=TimelineMark("last routed attempt", After.INJECT),
    summary="whether NGINX routed to, skipped and retried around a failed backend as its "
            "configuration's counters, balancer and timeouts say (its access log replayed)",
    objectives=(ObjectiveHook("ejection", _objective, _predict, _measure),)))
