"""Availability: every request that did not get an ok answer is one the configuration
implies; and acknowledged writes survive.

Conformance does not compare the success ratio with a threshold (that is the ``availability``
objective). It explains each non-ok request from NGINX's log and the configuration NGINX runs
(``lab.checks.outcomes``): not retried because ``proxy_next_upstream`` forbids it, no live
server, the backend's own answer during a fault, a rate limit, a client giving up inside a
timeout NGINX is configured to wait. Any other error, or a retry the configuration makes that
NGINX did not, fails it. An ``unknown`` outcome (timeout) is not a success.

For writes the reverse holds: a write the client saw acknowledged must be stored, whatever
else happened; an unacknowledged one may or may not be.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Annotated

from pydantic import Field

from lab.checks.base import (
    CheckResult,
    Measured,
    ObjectiveResult,
    Prediction,
    Verdict,
)
from lab.checks.ejection import pool_replay
from lab.checks.outcomes import Explainer, fault_windows
from lab.checks.registry import (
    CheckContext,
    CheckDef,
    ClientParams,
    ObjectiveHook,
    Observation,
    measured_objective,
    register,
)
from lab.checks.upstream_replay import Attempt, AttemptEnd, retry_allowed
from lab.expectations import Expectations, FailureMode, UpstreamPolicy, failed_attempt_cost
from lab.history import History, Outcome, RequestRecord
from lab.objectives import Objectives, threshold_text
from lab.stats import wilson_interval

NAME = "availability"
DURABILITY = "durability"
# How many unexplained requests a result lists.
SHOWN = 3


def explainer(history: History, expectations: Expectations) -> Explainer:
    """The run's outcome explainer: its replay and the settings of each request's location."""
    nginx = expectations.nginx
    pool = nginx.upstream

    def policy_for(uri: str) -> UpstreamPolicy:
        found = nginx.upstream_for(uri.split("?", 1)[0])
        return found if found is not None and found.name == pool.name else pool

    return Explainer(history, pool_replay(history, expectations), policy_for,
                     rate_limit_status=nginx.rate_limit_status)


def check_availability(history: History, expectations: Expectations) -> CheckResult:
    """Whether every request without an ok answer is one the running configuration implies."""
    requests = history.requests
    total = len(requests)
    ok = sum(r.outcome is Outcome.OK for r in requests)
    failed = sum(r.outcome is Outcome.FAIL for r in requests)
    unknown = total - ok - failed
    expected = "a non-ok answer only where the configuration implies one"
    values: list[tuple[str, float]] = [("total", float(total)), ("ok", float(ok)),
                                       ("failed", float(failed)), ("unknown", float(unknown))]
    if total == 0:
        return CheckResult(NAME, Verdict.UNKNOWN, "no requests", expected,
                           "nothing was sent")
    values.append(("ratio", ok / total))
    explain = explainer(history, expectations)
    outcomes = [o for r in requests if (o := explain.explain(r)) is not None]
    unexplained = [o for o in outcomes if not o.explained]
    reasons = Counter(f"{o.why.value}: {o.detail.split(':', 1)[-1].strip()}"
                      if o.why.value == "not retried" else o.why.value for o in outcomes
                      if o.explained)
    values += [("expected_errors", float(len(outcomes) - len(unexplained))),
               ("unexplained", float(len(unexplained)))]
    down = _sent_while_down(history, expectations.upstream)
    if down:
        values += [("down_sent", float(len(down))),
                   ("down_not_ok", float(sum(r.outcome is not Outcome.OK for r in down)))]
    expected = (f"{len(outcomes) - len(unexplained)} non-ok answers the configuration implies"
                + (" (" + "; ".join(f"{n} {why}" for why, n in reasons.most_common()) + ")"
                   if reasons else "") + ", none other")
    measured = (f"{ok}/{total} ok = {ok / total:.5f} ({failed} fail, {unknown} unknown); "
                f"{len(unexplained)} not explained by the configuration")
    derivation = ("each non-ok request joined to NGINX's log line (X-Request-Id) and its tries "
                  "replayed: explained when proxy_next_upstream, its tries or timeout, the "
                  "non-idempotent rule, no live server, a fault's own answer, limit_req or a "
                  "client giving up inside a configured wait accounts for it")
    origin = requests[0].sent_at
    details = tuple(f"{o.request.method} {o.request.path} at +{o.request.sent_at - origin:.3f} "
                    f"s: {o.why.value}: {o.detail}" for o in unexplained[:SHOWN])
    verdict = Verdict.FAIL if unexplained else Verdict.PASS
    return CheckResult(NAME, verdict, measured, expected, derivation, details, tuple(values))


def _sent_while_down(history: History, policy: UpstreamPolicy) -> list[RequestRecord]:
    """The requests sent while a backend of the pool was down (a fault that ends, freezes or
    cuts it off, until it was ready again): what the availability prediction is about."""
    windows = [(start, until) for node, start, until
               in fault_windows(history, lambda effect: effect.outage)
               if node in policy.servers]
    return [r for r in history.requests
            if any(start <= r.sent_at < until for start, until in windows)]


def check_durability(acknowledged_write_ids: frozenset[str] | None,
                     stored_write_ids: frozenset[str] | None) -> CheckResult:
    """Whether every write the client saw acknowledged is stored (unacknowledged ones may be)."""
    expected = "every acknowledged write stored"
    derivation = ("a write answered 201 was committed before the answer; it must be in "
                  "PostgreSQL afterwards, whatever failed in between")
    if acknowledged_write_ids is None or stored_write_ids is None:
        return CheckResult(DURABILITY, Verdict.UNKNOWN,
                           "write check needs both acknowledged and stored ids",
                           expected, derivation)
    if not acknowledged_write_ids:
        return CheckResult(DURABILITY, Verdict.UNKNOWN, "no write was acknowledged", expected,
                           derivation)
    missing = sorted(acknowledged_write_ids - stored_write_ids)
    values = (("acknowledged_writes", float(len(acknowledged_write_ids))),
              ("lost_writes", float(len(missing))))
    measured = f"{len(missing)} of {len(acknowledged_write_ids)} acknowledged writes lost"
    details: tuple[str, ...] = ()
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        details = (f"lost acknowledged writes: {shown}",)
    return CheckResult(DURABILITY, Verdict.FAIL if missing else Verdict.PASS, measured, expected,
                       derivation, details, values)


# -- registration -------------------------------------------------------------------------------



class AvailabilityParams(ClientParams):
    # This stream's own availability objective (overrides ``objectives.availability``).
    slo: Annotated[float, Field(gt=0, le=1)] | None = None


def _judge_availability(ctx: CheckContext, params: AvailabilityParams) -> CheckResult:
    return check_availability(ctx.history, ctx.expectations)


def _availability_objective(result: CheckResult, objectives: Objectives, ctx: CheckContext,
                            params: AvailabilityParams) -> ObjectiveResult:
    if params.slo is not None:
        objectives = objectives.model_copy(update={"availability": params.slo})
    ratio, total = result.value("ratio"), result.value("total")
    how = "ok answers / requests sent (a timeout counts as not ok)"
    if ratio is None:
        return measured_objective("availability", objectives, value=None, passed=None,
                                  measured=result.measured, derivation=how)
    return measured_objective("availability", objectives, value=ratio,
                              passed=ratio >= objectives.availability - 1e-12,
                              measured=f"{ratio:.5f} of {total:.0f}", derivation=how)


# Balancing on a key: the share of the traffic one server gets is the share of keys that hash to
# it, and the lab's traffic has few (one client address, a few paths).
_KEYED = ("hash", "ip_hash")


def _share(policy: UpstreamPolicy, failing: Sequence[str]) -> tuple[float, str]:
    """The share of the requests the failing servers are offered, as a bound and in words:
    their weight over the primaries' for round robin and the like; every request for a pool
    balanced on a key (all of the lab's requests may hash to one of them, docs/semantics.md
    §1)."""
    if policy.balancing in _KEYED:
        key = policy.hash_key or "the client address"
        return 1.0, (f"every request ({policy.balancing} on {key}: the lab's clients share "
                     "one address, so their requests may all go to the failing backend)")
    weights = policy.weights
    total = sum(weights.values())
    mine = sum(weights.get(node, 1) for node in failing)
    if len(set(weights.values())) == 1 and len(failing) == 1:
        return 1 / len(weights), f"1 in {len(weights)} requests"
    return mine / total, f"{mine} in {total} requests (by weight)"


def _availability_predict(ctx: CheckContext, params: AvailabilityParams,
                          objectives: Objectives) -> Prediction:
    if params.slo is not None:
        objectives = objectives.model_copy(update={"availability": params.slo})
    policy = ctx.expectations.upstream
    threshold = threshold_text(objectives, "availability")
    failing = {node: mode for node, mode in ctx.failure_modes.items() if node in policy.servers}
    if not failing:
        return Prediction("availability", NAME, threshold, "no backend fault planned", None,
                          "only a failing backend is predicted here; other faults are measured")
    # A try that waits longer than the clients do ends with the client giving up: no answer,
    # no retry and no failure counted (docs/semantics.md §1), whatever proxy_next_upstream says.
    outwaited = [node for node, mode in failing.items() if mode is not None
                 and failed_attempt_cost(policy, mode) >= ctx.client_timeout_s]
    if outwaited:
        several = len(policy.servers) > 1
        fraction, text = _share(policy, outwaited)
        share = f"up to {text} get" if several else "every request gets"
        # One server: the requests sent near the restart are answered once it is back (the
        # connect's retransmitted SYN reaches it), so the share is stated, not bounded.
        return Prediction("availability", NAME, threshold,
                          f"{share} no answer while the backend is down",
                          False, f"a try on the failing backend waits "
                          f"{failed_attempt_cost(policy, failing[outwaited[0]]):g} s "
                          f"(its timeout) >= the clients' {ctx.client_timeout_s:g} s: the client "
                          "gives up first, NGINX neither retries nor counts it",
                          high=fraction if several else None)
    why_not = {node: reason for node, mode in failing.items()
               if mode is not None and (reason := _no_retry(policy, mode)) is not None}
    unretried = list(why_not)
    if not unretried:
        return Prediction("availability", NAME, threshold,
                          "no client error from the failing backend",
                          True, f"proxy_next_upstream {' '.join(policy.next_upstream) or 'off'} "
                          "retries its failed tries on another server", high=0.0)
    if not policy.ejects:
        fraction, text = _share(policy, unretried)
        return Prediction("availability", NAME, threshold,
                          f"{'up to' if policy.balancing in _KEYED else 'about'} {text} fail "
                          "while a backend is down",
                          False, "failed tries are neither retried nor ejected (max_fails = "
                          f"{policy.max_fails}, proxy_next_upstream "
                          f"{' '.join(policy.next_upstream) or 'off'})",
                          high=fraction)
    # Each try on the failed backend reaches the client as an error until it is ejected: the
    # count reaches M = max_fails x workers only c after the first try began, and the requests
    # routed to it meanwhile fail too (lint's arithmetic: M + floor(c x its rate) of them).
    workers = 1 if policy.shared_counters else policy.worker_processes
    rate = ctx.stream_rates.get(params.client, ctx.rate_per_s) if params.client else ctx.rate_per_s
    total = max(1.0, rate * ctx.planned_s)
    # Each fault on it ejects it anew (a crash loop's every kill), from a count back at zero.
    counted = policy.max_fails * workers
    per_node = []
    for node in unretried:
        cost = failed_attempt_cost(policy, failing[node])
        backend_rate = rate * _share(policy, [node])[0]
        times = max(1, ctx.injections.get(node, 1))
        per_node.append((times * (counted + math.floor(cost * backend_rate + 1e-9)), cost,
                         backend_rate, times))
    errors = sum(n for n, _, _, _ in per_node)
    ratio = 1 - errors / total
    arithmetic = " + ".join(
        (f"{times} x " if times > 1 else "")
        + (f"({counted} + {cost:g} s x {backend_rate:.3g} req/s)" if cost and times > 1
           else f"{counted} + {cost:g} s x {backend_rate:.3g} req/s" if cost else f"{counted}")
        for _, cost, backend_rate, times in per_node)
    return Prediction("availability", NAME, threshold, f"about {ratio:.4f}",
                      ratio >= objectives.availability,
                      f"failed tries are not retried ({why_not[unretried[0]]}): max_fails * "
                      f"workers + c * the backend's rate, per fault on it = {arithmetic} = "
                      f"{errors:.0f} errors before the ejections, of about {total:.0f} requests "
                      f"(rate * planned time) = 1 - {errors:.0f}/{total:.0f}")


# How a try on a backend failing each way ends, as the replay reads it from the log, and what
# it costs: a killed backend's connects are refused for a moment, then hang until the timeout.
_ENDINGS = {FailureMode.REFUSED: (AttemptEnd.ERROR,),
            FailureMode.UNREACHABLE: (AttemptEnd.ERROR, AttemptEnd.CONNECT_TIMEOUT),
            FailureMode.FROZEN: (AttemptEnd.READ_TIMEOUT,)}


def _no_retry(policy: UpstreamPolicy, mode: FailureMode) -> str | None:
    """Why NGINX answers a try that failed this way to the client instead of trying another
    server (None: it retries): the replay's own rule (``retry_allowed``), asked of a first GET
    ending each way this mode ends."""
    peers = (sum(not m.down for m in policy.members) if policy.members
             else len(policy.servers) + len(policy.backup_servers))
    limit = min(policy.next_upstream_tries or peers, peers)
    for end in _ENDINGS[mode]:
        cost = {AttemptEnd.CONNECT_TIMEOUT: policy.connect_timeout_s,
                AttemptEnd.READ_TIMEOUT: policy.read_timeout_s}.get(end, 0.0)
        first = Attempt(entry=0, index=0, backend="", worker=0, started_at=0.0, duration_s=cost,
                        status="-", end=end, method="GET", uri=policy.location, retried=False,
                        slack_s=0.0)
        allowed, why = retry_allowed(policy, first, cost, limit)
        if not allowed:
            return why
    return None


def _availability_measure(result: CheckResult) -> Measured | None:
    """The share of the requests sent while a backend was down that got no ok answer, with its
    99.9 % Wilson score interval (n requests are a sample of what the configuration does)."""
    sent, not_ok = result.value("down_sent"), result.value("down_not_ok")
    if not sent or not_ok is None:
        return None
    low, high = wilson_interval(int(not_ok), int(sent))
    return Measured(low, high, f"{not_ok:.0f}/{sent:.0f} = {not_ok / sent:.3f} of the requests "
                    f"sent while it was down got no ok answer (99.9 % interval {low:.3f}.."
                    f"{high:.3f})")


register(CheckDef(
    name=NAME, params=AvailabilityParams, judge=_judge_availability,
    summary="the share of client requests answered ok, against the scenario's stated SLO",
    objectives=(ObjectiveHook("availability", _availability_objective, _availability_predict,
                              _availability_measure),)))


class DurabilityParams(ClientParams):
    pass


def _judge_durability(ctx: CheckContext, params: DurabilityParams) -> CheckResult:
    acknowledged = frozenset(r.request_id for r in ctx.history.requests
                             if r.outcome is Outcome.OK and r.status == 201 and r.request_id)
    return check_durability(acknowledged, ctx.observation(Observation.STORED_WRITES))


def _durability_objective(result: CheckResult, objectives: Objectives, ctx: CheckContext,
                          params: DurabilityParams) -> ObjectiveResult:
    lost = result.value("lost_writes")
    how = "acknowledged (201) write ids missing from PostgreSQL afterwards"
    if lost is None:
        return measured_objective("lost_writes", objectives, value=None, passed=None,
                                  measured=result.measured, derivation=how)
    return measured_objective("lost_writes", objectives, value=lost,
                              passed=lost <= objectives.lost_writes,
                              measured=f"{lost:.0f} lost", derivation=how)


def _durability_predict(ctx: CheckContext, params: DurabilityParams,
                        objectives: Objectives) -> Prediction:
    postgres = ctx.expectations.postgres
    threshold = threshold_text(objectives, "lost_writes")
    if postgres.synchronous_commit:
        return Prediction("lost_writes", DURABILITY, threshold, "0 lost", True,
                          "synchronous_commit = on: a commit is flushed to WAL before it is "
                          "acknowledged (docs/semantics.md §6)")
    crash = "postgres" in ctx.failure_modes
    return Prediction("lost_writes", DURABILITY, threshold,
                      "acknowledged writes lost if PostgreSQL crashes", False if crash else None,
                      "synchronous_commit = off: a commit is acknowledged before its WAL is "
                      "flushed (docs/semantics.md §6)"
                      + ("; the scenario stops or kills postgres" if crash else ""))


register(CheckDef(
    name=DURABILITY, params=DurabilityParams, judge=_judge_durability,
    summary="every write the client saw acknowledged (201) is in PostgreSQL afterwards",
    needs=frozenset({Observation.STORED_WRITES}),
    objectives=(ObjectiveHook("lost_writes", _durability_objective, _durability_predict),)))
