"""Ejection timing: how long NGINX kept routing to a failed backend before skipping it.

The model (docs/semantics.md §1): each failed attempt costs ``c`` before NGINX counts it
(``c`` depends on how the backend failed, see ``FailureMode``); once ``max_fails`` failures
are counted the server is skipped for ``fail_timeout``. Under round robin over ``n`` servers
at ``rate`` requests/s, one backend is offered an attempt every ``g = n / rate`` seconds, so
the last attempt routed to the failed backend starts between ``c + (max_fails - 2) * g`` and
``c + max_fails * g`` after the fault (failure counts lag their attempts by ``c``, and a
failed server's weight drops, which stretches ``g``).

The attempts are read from NGINX's access log, not the client: a retried request reaches
the client as one 200, but the log lists every upstream it tried.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from lab.checks.base import CheckResult, ObjectiveResult, Prediction, Verdict, never_crashes
from lab.checks.registry import (
    CheckContext,
    CheckDef,
    ClientParams,
    ObjectiveHook,
    measured_objective,
    register,
)
from lab.expectations import FailureMode, UpstreamPolicy
from lab.history import AccessLogEntry, FaultEvent, History, Outcome, RequestRecord
from lab.objectives import Objectives, threshold_text

NAME = "ejection"
# NGINX never retries these once sent, unless proxy_next_upstream lists non_idempotent.
NON_IDEMPOTENT = frozenset({"POST", "LOCK", "PATCH"})


def failed_attempt_cost(policy: UpstreamPolicy, mode: FailureMode | None) -> float:
    """Seconds one failed attempt costs before NGINX counts it and retries (0 for None)."""
    if mode is FailureMode.UNREACHABLE:
        return policy.connect_timeout_s
    if mode is FailureMode.FROZEN:
        return policy.read_timeout_s
    return 0.0


def cost_derivation(policy: UpstreamPolicy, mode: FailureMode | None) -> str:
    """The text saying where ``failed_attempt_cost`` comes from."""
    if mode is FailureMode.UNREACHABLE:
        return (f"c = proxy_connect_timeout = {policy.connect_timeout_s:g} s "
                "(unreachable: the connect hangs until it times out)")
    if mode is FailureMode.FROZEN:
        return (f"c = proxy_read_timeout = {policy.read_timeout_s:g} s "
                "(frozen: the handshake completes, no answer comes)")
    if mode is FailureMode.REFUSED:
        return "c = 0 s (refused: the kernel answers RST at once)"
    return "c = 0 s (no backend failure mode given)"


# Which proxy_next_upstream conditions a failure of each mode raises in NGINX.
_RETRY_CONDITIONS = {
    FailureMode.REFUSED: ("error",),
    FailureMode.UNREACHABLE: ("error", "timeout"),  # EHOSTUNREACH is an error, silence a timeout
    FailureMode.FROZEN: ("timeout",),
}


@dataclass(frozen=True)
class UpstreamAttempt:
    """One try of one upstream server, as reconstructed from an access log entry."""

    started_at: float
    backend: str
    status: str
    duration_s: float | None
    entry: AccessLogEntry


def upstream_attempts(entries: Iterable[AccessLogEntry]) -> list[UpstreamAttempt]:
    """Every upstream attempt in the log, by start time.

    Attempt k of an entry starts at the entry's start plus the response times of the
    attempts before it ("-" counts as 0: nginx logs it when no connection was made).
    """
    attempts: list[UpstreamAttempt] = []
    for entry in entries:
        at = entry.started_at
        for backend, status, duration in zip(entry.upstream_backends, entry.upstream_statuses,
                                             entry.upstream_times_s, strict=False):
            attempts.append(UpstreamAttempt(at, backend, status, duration, entry))
            at += duration or 0.0
    attempts.sort(key=lambda a: a.started_at)
    return attempts


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


def _cluster(attempts: Sequence[UpstreamAttempt], gap_s: float) -> list[UpstreamAttempt]:
    cluster = [attempts[0]]
    for attempt in attempts[1:]:
        if attempt.started_at - cluster[-1].started_at > gap_s:
            break
        cluster.append(attempt)
    return cluster


@dataclass(frozen=True)
class _ClientErrors:
    judged: int          # requests whose errors are judged (idempotent, or retried anyway)
    errors: int          # non-ok among them
    other_errors: int    # non-ok among the requests not judged (non-idempotent)
    unknown: int
    max_latency_s: float | None
    expected: str
    ok: bool


def _client_errors(requests: Sequence[RequestRecord], policy: UpstreamPolicy,
                   mode: FailureMode, routed_attempts: int) -> _ClientErrors:
    needed = _RETRY_CONDITIONS[mode]
    missing = [cond for cond in needed if cond not in policy.next_upstream]
    retried = not missing and len(policy.servers) > 1 and policy.next_upstream_tries != 1
    # A refused connect never sent anything, so NGINX may retry even a POST.
    judge_all = mode is FailureMode.REFUSED or "non_idempotent" in policy.next_upstream
    judged, others = [], []
    for r in requests:
        (judged if judge_all or r.method.upper() not in NON_IDEMPOTENT else others).append(r)
    errors = sum(r.outcome is not Outcome.OK for r in judged)
    latencies = [r.latency_s for r in requests if r.latency_s is not None]
    if retried:
        expected, ok = "0 client errors on retryable requests", errors == 0
    else:
        why = (f"proxy_next_upstream lacks {' and '.join(missing)}" if missing
               else "no other server to retry on" if len(policy.servers) <= 1
               else "proxy_next_upstream_tries is 1")
        # Each attempt on the failed target reaches the client as an error.
        expected = (f">= 1 client error (about one per attempt on the target, "
                    f"{routed_attempts} seen): {why}")
        ok = errors >= 1 if routed_attempts and judged else True
    return _ClientErrors(len(judged), errors, sum(r.outcome is not Outcome.OK for r in others),
                         sum(r.outcome is Outcome.UNKNOWN for r in requests),
                         max(latencies) if latencies else None, expected, ok)


@never_crashes(NAME)
def check_ejection(history: History, policy: UpstreamPolicy, target: str, mode: FailureMode,
                   rate_per_s: float, tolerance_s: float = 0.5) -> CheckResult:
    """Whether NGINX stopped routing to ``target`` when its max_fails/timeouts say it should."""
    window = first_fault_window(history, target)
    if window is None:
        return CheckResult(NAME, Verdict.UNKNOWN, f"no inject event for {target}", "-",
                           "the history has no fault on this target to time from")
    inject, heal = window
    if target not in policy.servers:
        return CheckResult(NAME, Verdict.UNKNOWN, f"{target} is not a server of upstream "
                           f"{policy.name!r}", "-", f"servers: {', '.join(policy.servers)}")
    end = heal.at if heal is not None else observation_end(history)
    if end is None or end <= inject.at or rate_per_s <= 0:
        return CheckResult(NAME, Verdict.UNKNOWN, "no traffic after the fault", "-",
                           "nothing to time the ejection against")

    n, c = len(policy.servers), failed_attempt_cost(policy, mode)
    g = n / rate_per_s
    # A backend still in rotation gets an attempt every g seconds, so a quiet period of 5 g
    # (at least 1 s) shows it was ejected; re-probes come only after fail_timeout, so any gap
    # up to fail_timeout/2 cannot be mistaken for one.
    gap = min(policy.fail_timeout_s / 2, max(5 * g, 1.0))
    workers = 1 if policy.shared_counters else policy.worker_processes
    # The fault took effect somewhere between issuing it (started_at) and its return (at):
    # the first failing attempt may precede ``at`` by up to that long.
    uncertainty = max(0.0, inject.at - inject.started_at)
    attempts = [a for a in upstream_attempts(history.access_log)
                if a.backend == target and inject.started_at <= a.started_at < end]
    # While a kill is under way the process may be gone before its address: a try then is
    # refused at once and counts without costing c (seen under load: a 0.27 s docker kill
    # took three refused tries). Those tries, read from the log, shorten the window.
    refused = sum(1 for a in attempts if a.started_at <= inject.at and a.status != "200"
                  and (a.duration_s or 0.0) < c / 2) if c > 0 else 0
    counted = min(refused, policy.max_fails)
    if counted >= policy.max_fails:
        lower = -uncertainty
    else:
        lower = max(-uncertainty if counted else 0.0,
                    c + (policy.max_fails - counted - 2) * g - uncertainty)
    upper = c + policy.max_fails * workers * g + tolerance_s
    never = policy.max_fails == 0 or n == 1
    derivation = [
        (f"g = servers / rate = {n} / {rate_per_s:g} = {g:.3f} s between attempts routed to "
         "one backend (round robin)"),
        cost_derivation(policy, mode),
        f"u = {uncertainty:.3f} s the fault action took (it took effect within that time)",
    ]
    if counted:
        derivation.append(f"k = {counted} tries refused at once while the action was under way "
                          "(the process gone before its address; docs/semantics.md §1): they "
                          "count without costing c")
    if never:
        derivation.append("max_fails = 0 disables failure counting" if policy.max_fails == 0
                          else "an upstream with a single server never marks it down")
        expected = "never ejected: attempts routed to it throughout the fault window"
    else:
        per_worker = (f" * worker_processes {workers} (no zone: counters per worker)"
                      if workers > 1 else "")
        k = " - k" if counted else ""
        derivation.append(
            f"last routed attempt in [max(0, c + (max_fails{k}-2)*g - u), "
            f"c + max_fails{per_worker}*g + tolerance] = "
            f"[max(0, {c:g} + {policy.max_fails - counted - 2}*{g:.3f} - {uncertainty:.3f}), "
            f"{c:g} + {policy.max_fails}*{workers}*{g:.3f} + {tolerance_s:g}] = "
            f"[{lower:.3f}, {upper:.3f}] s"
            + (" (all max_fails tries refused: ejected while the action was under way, the lower "
               "bound is its start)" if counted >= policy.max_fails else ""))
        expected = f"last attempt routed to {target} {lower:.3f}-{upper:.3f} s after the fault"
    derivation.append(f"cluster of routed attempts ends at the first gap > min(fail_timeout/2, "
                      f"max(5 g, 1 s)) = {gap:.3f} s (in rotation it would get one every g; "
                      "re-probes follow only every fail_timeout)")

    values = [("g_s", g), ("c_s", c), ("lower_s", lower), ("upper_s", upper),
              ("never_ejects", 1.0 if never else 0.0), ("refused_during_action", float(refused))]
    if g >= gap:
        return CheckResult(NAME, Verdict.UNKNOWN, "traffic too slow to judge", expected,
                           "; ".join(derivation) + f"; g = {g:.3f} s >= {gap:g} s: routed "
                           "attempts cannot be told apart from re-probes", values=tuple(values))

    if not attempts:
        return CheckResult(NAME, Verdict.UNKNOWN, f"no upstream attempt on {target} after the "
                           "fault in the access log", expected, "; ".join(derivation),
                           values=tuple(values))
    cluster = _cluster(attempts, gap)
    last = cluster[-1]
    following = attempts[len(cluster)].started_at if len(cluster) < len(attempts) else end
    ejected = following - last.started_at > gap
    measured_s = last.started_at - inject.at
    values += [("measured_s", measured_s), ("ejected", 1.0 if ejected else 0.0),
               ("attempts_in_cluster", float(len(cluster))),
               ("window_s", end - inject.at)]

    client_end = inject.at + measured_s + c + 1.0 if ejected else end
    errors = _client_errors(requests_between(history.requests, inject.at, client_end), policy,
                            mode, len(cluster))
    values += [("client_errors", float(errors.errors)), ("client_requests", float(errors.judged)),
               ("client_unknown", float(errors.unknown))]
    if errors.max_latency_s is not None:
        values.append(("max_latency_s", errors.max_latency_s))
    details = (
        f"{len(cluster)} attempts on {target} after the fault, the last at +{measured_s:.3f} s",
        f"client requests from the fault to +{client_end - inject.at:.3f} s "
        f"(ejection + c + 1 s): {errors.judged} judged, {errors.errors} not ok"
        + (f", {errors.other_errors} errors on non-idempotent requests (not retried once "
           "sent, not judged)" if errors.other_errors else "")
        + (f", max latency {errors.max_latency_s:.3f} s (expect about c = {c:g} s plus "
           "normal latency)" if errors.max_latency_s is not None else ""),
        f"client errors expected: {errors.expected}",
    )
    expected_text = f"{expected}; {errors.expected}"

    if never:
        verdict = Verdict.PASS if not ejected and errors.ok else Verdict.FAIL
        measured = ("attempts routed throughout the fault window" if not ejected else
                    f"ejected: last routed attempt +{measured_s:.3f} s, then none for "
                    f"{following - last.started_at:.3f} s")
    elif not ejected:
        if end - inject.at <= upper + gap:
            return CheckResult(NAME, Verdict.UNKNOWN, f"fault window of {end - inject.at:.3f} s "
                               "too short to see the ejection", expected_text,
                               "; ".join(derivation), details, tuple(values))
        verdict = Verdict.FAIL
        measured = (f"not ejected within the fault window: attempts routed to {target} until "
                    f"+{measured_s:.3f} s of {end - inject.at:.3f} s")
    else:
        in_window = lower <= measured_s <= upper
        verdict = Verdict.PASS if in_window and errors.ok else Verdict.FAIL
        late = "" if in_window else (" (too late)" if measured_s > upper else " (too early)")
        measured = f"last routed attempt +{measured_s:.3f} s after the fault{late}"
    measured += f", {errors.errors} client errors"
    return CheckResult(NAME, verdict, measured, expected_text, "; ".join(derivation), details,
                       tuple(values))


# -- registration -------------------------------------------------------------------------------


class EjectionParams(ClientParams):
    target: str
    tolerance_s: Annotated[float, Field(ge=0)] = 0.5


def worst_case_ejection_s(policy: UpstreamPolicy, mode: FailureMode | None,
                          rate_per_s: float) -> tuple[float, str]:
    """The latest the last routed attempt can come after the fault, and its arithmetic."""
    n, c = len(policy.servers), failed_attempt_cost(policy, mode)
    g = n / (rate_per_s or 1.0)
    workers = 1 if policy.shared_counters else policy.worker_processes
    return (c + policy.max_fails * workers * g,
            f"c + max_fails * workers * g = {c:g} + {policy.max_fails} * {workers} * {g:.3f}")


def _judge(ctx: CheckContext, params: EjectionParams) -> CheckResult:
    node = ctx.node(params.target)
    mode = ctx.failure_modes.get(node) or FailureMode.UNREACHABLE
    return check_ejection(ctx.history, ctx.expectations.upstream, node, mode, ctx.rate_per_s,
                          tolerance_s=params.tolerance_s)


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
    if not policy.ejects:
        why = ("max_fails = 0 disables failure counting" if policy.max_fails == 0
               else "an upstream with one server never marks it down")
        return Prediction("ejection", NAME, threshold, "never ejected", False, why)
    worst, arithmetic = worst_case_ejection_s(policy, mode, ctx.rate_per_s)
    return Prediction("ejection", NAME, threshold, f"out of rotation within {worst:.3f} s",
                      worst <= objectives.ejection,
                      f"{arithmetic} = {worst:.3f} s (a {mode.value} backend)")


register(CheckDef(
    name=NAME, params=EjectionParams, judge=_judge,
    summary="how long NGINX kept routing to a failed backend (access log), against the window "
            "max_fails, the timeouts and the request rate imply",
    objectives=(ObjectiveHook("ejection", _objective, _predict),)))
