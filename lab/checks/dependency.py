"""Dependency outages seen by clients: do requests fail fast, and how soon do they succeed again?"""

from __future__ import annotations

from lab.checks.base import CheckResult, ObjectiveResult, Prediction, Verdict
from lab.checks.registry import (
    After,
    CheckContext,
    CheckDef,
    ClientParams,
    ObjectiveHook,
    TimelineMark,
    measured_objective,
    register,
)
from lab.expectations import DurationExpr, evaluate_duration, explain_duration
from lab.history import History, Outcome
from lab.objectives import Objectives, threshold_text
from lab.units import text_seconds

FAIL_FAST = "fail-fast"
RECOVERY = "recovery"


def check_fail_fast(history: History, *, servers: int, db_budget_s: float) -> CheckResult:
    """Whether every request sent during a fault was answered within its bound (none hung)."""
    windows_ = [(inject.started_at, heal.at if heal else float("inf"))
                for inject, heal in history.fault_windows()]
    # A healthy answer's own time, the longest this run measured outside the faults: what a
    # request pays beyond the backends' budgets (NGINX, the client, a shared machine).
    healthy = max((r.latency_s for r in history.requests if r.latency_s is not None
                   and r.outcome is Outcome.OK
                   and not any(a <= r.sent_at <= b for a, b in windows_)), default=0.0)
    bound = servers * db_budget_s + healthy
    derivation = (f"a backend gives up on the database after its budget of {db_budget_s:g} s and "
                  "answers 503; NGINX retries a 503 on every other server (proxy_next_upstream "
                  "http_503), so a client waits at most servers x budget + the longest healthy "
                  f"answer outside the faults = {servers} x {db_budget_s:g} + {healthy:.3f} = "
                  f"{bound:.3f} s")
    expected = (f"every request sent during the faults answered within {bound:.3f} s; "
                "none left hanging (unknown)")
    windows = [(inject.at, heal.at if heal else float("inf"))
               for inject, heal in history.fault_windows()]
    if not windows:
        return CheckResult(FAIL_FAST, Verdict.UNKNOWN, "no fault window: no outage to fail "
                           "fast in", expected, derivation)
    during = [r for r in history.requests
              if any(start <= r.sent_at <= stop for start, stop in windows)]
    failed = [r for r in during if r.outcome is not Outcome.OK]
    if not failed:
        return CheckResult(FAIL_FAST, Verdict.UNKNOWN,
                           f"no request failed during the faults ({len(during)} sent)",
                           expected, derivation)
    # Every request sent during a fault is judged, not only the failed ones: a request that
    # waited through two budgets and then succeeded because the fault was healed meanwhile
    # still hung; judging only failures would let a slow backend pass whenever heals are quick.
    slow = [r for r in during if r.latency_s is None or r.latency_s > bound]
    worst = max((r.latency_s or float("inf")) for r in during)
    statuses = sorted({str(r.status) for r in failed})
    measured = (f"{len(failed)} of {len(during)} requests failed during the faults (statuses "
                f"{', '.join(statuses)}), the slowest answered in {worst:.3f} s; {len(slow)} "
                "beyond the bound")
    details = tuple(f"request {r.id} sent +{r.sent_at - windows[0][0]:.3f} s: "
                    + ("no answer (" + (r.error or "unknown") + ")" if r.latency_s is None
                       else f"{r.latency_s:.3f} s")
                    + f", status {r.status}" for r in slow[:10])
    values = (("failed", float(len(failed))), ("slow", float(len(slow))), ("bound_s", bound),
              ("worst_s", worst))
    return CheckResult(FAIL_FAST, Verdict.FAIL if slow else Verdict.PASS, measured, expected,
                       derivation, details, values)


def check_recovery(history: History, *, bound_s: float, derivation: str) -> CheckResult:
    """Whether requests succeed again within ``bound_s`` of the last heal."""
    heals = [heal for _, heal in history.fault_windows() if heal is not None]
    expected = f"a request sent after the last heal succeeds within {bound_s:g} s of it"
    if not heals:
        return CheckResult(RECOVERY, Verdict.UNKNOWN, "no healed fault", expected, derivation)
    healed = max(heal.at for heal in heals)
    after = sorted((r for r in history.requests if r.sent_at >= healed), key=lambda r: r.sent_at)
    first_ok = next((r for r in after if r.outcome is Outcome.OK), None)
    if first_ok is None:
        return CheckResult(RECOVERY, Verdict.FAIL if after else Verdict.UNKNOWN,
                           f"no request succeeded after the heal ({len(after)} sent)", expected,
                           derivation)
    measured_s = first_ok.sent_at - healed
    failed_after = sum(r.outcome is not Outcome.OK for r in after if r.sent_at < first_ok.sent_at)
    verdict = Verdict.PASS if measured_s <= bound_s else Verdict.FAIL
    return CheckResult(RECOVERY, verdict,
                       f"first success {measured_s:.3f} s after the heal "
                       f"({failed_after} failed before it)",
                       expected, derivation,
                       values=(("measured_s", measured_s), ("bound_s", bound_s)))


# -- registration -------------------------------------------------------------------------------


class FailFastParams(ClientParams):
    client: str


def _fail_fast(ctx: CheckContext, params: FailFastParams) -> CheckResult:
    return check_fail_fast(ctx.history, servers=len(ctx.expectations.upstream.servers),
                           db_budget_s=ctx.expectations.backend.db_budget_s)


def _sent_during_outage(ctx: CheckContext) -> list:
    windows = [(inject.at, heal.at if heal else float("inf"))
               for inject, heal in ctx.history.fault_windows()]
    return [r for r in ctx.history.requests
            if any(start <= r.sent_at <= stop for start, stop in windows)]


def _fail_fast_objective(result: CheckResult, objectives: Objectives, ctx: CheckContext,
                         params: FailFastParams) -> ObjectiveResult:
    how = ("every request sent while the dependency was down: the slowest answer, and those "
           "that got no status at all (a timeout or a reset: the client was left hanging)")
    during = _sent_during_outage(ctx)
    if not during:
        return measured_objective("fail_fast", objectives, value=None, passed=None,
                                  measured="no request sent during an outage", derivation=how)
    unanswered = [r for r in during if r.status is None or r.latency_s is None]
    slowest = max((r.latency_s for r in during if r.latency_s is not None), default=0.0)
    late = [r for r in during if r.latency_s is not None and r.latency_s > objectives.fail_fast]
    parts = [f"slowest answer {slowest:.3f} s of {len(during)} sent during the outage"]
    if late:
        parts.append(f"{len(late)} answered after {text_seconds(objectives.fail_fast)}")
    if unanswered:
        parts.append(f"{len(unanswered)} without a status "
                     f"({unanswered[0].error or 'no answer'})")
    return measured_objective("fail_fast", objectives,
                              value=float("inf") if unanswered else slowest,
                              passed=not late and not unanswered, measured="; ".join(parts),
                              derivation=how)


def _fail_fast_predict(ctx: CheckContext, params: FailFastParams,
                       objectives: Objectives) -> Prediction:
    upstream = ctx.expectations.upstream
    budget = ctx.expectations.backend.db_budget_s
    retried = "http_503" in upstream.next_upstream
    tries = len(upstream.servers) if retried else 1
    if retried and upstream.next_upstream_tries:
        tries = min(tries, upstream.next_upstream_tries)
    worst = tries * budget
    if retried and upstream.next_upstream_timeout_s:
        worst = min(worst, upstream.next_upstream_timeout_s + budget)
    return Prediction("fail_fast", FAIL_FAST, threshold_text(objectives, "fail_fast"),
                      f"at most about {text_seconds(worst)}", worst <= objectives.fail_fast,
                      f"{tries} tr{'ies' if tries != 1 else 'y'} (proxy_next_upstream "
                      f"{'retries' if retried else 'does not retry'} a 503) x the backend's "
                      f"database budget {budget:g} s = {worst:g} s")


register(CheckDef(
    name=FAIL_FAST, params=FailFastParams, judge=_fail_fast,
    summary="requests that need a dependency that is down fail within the backend's budget times "
            "NGINX's retries, none hangs",
    objectives=(ObjectiveHook("fail_fast", _fail_fast_objective, _fail_fast_predict),)))


class RecoveryParams(ClientParams):
    client: str
    within: DurationExpr


def _recovery(ctx: CheckContext, params: RecoveryParams) -> CheckResult:
    bound = evaluate_duration(params.within, ctx.names)
    return check_recovery(ctx.history, bound_s=bound,
                          derivation=f"bound within = {explain_duration(params.within, ctx.names)}")


def _recovery_objective(result: CheckResult, objectives: Objectives, ctx: CheckContext,
                        params: RecoveryParams) -> ObjectiveResult:
    measured = result.value("measured_s")
    how = ("from the last heal of the dependency to the first client request that succeeded: the "
           "errors clients still saw after it was back")
    if measured is None:
        return measured_objective("dependency_recovery", objectives, value=None,
                                  passed=False if result.verdict is Verdict.FAIL else None,
                                  measured=result.measured, derivation=how)
    return measured_objective("dependency_recovery", objectives, value=measured,
                              passed=measured <= objectives.dependency_recovery,
                              measured=f"clients served again {text_seconds(round(measured, 3))} "
                              "after the dependency was back", derivation=how)


def _recovery_predict(ctx: CheckContext, params: RecoveryParams,
                      objectives: Objectives) -> Prediction:
    upstream = ctx.expectations.upstream
    ejected_by_503 = "http_503" in upstream.next_upstream and upstream.ejects
    parts = ([f"fail_timeout {upstream.fail_timeout_s:g} s (503s eject the backends)"]
             if ejected_by_503 else [])
    total = upstream.fail_timeout_s if ejected_by_503 else 0.0
    if "postgres" in ctx.failure_modes:
        retry = ctx.expectations.pgbouncer.server_login_retry_s
        parts.append(f"server_login_retry {retry:g} s "
                     "(PgBouncer refuses logins after a failed one)")
        total += retry
    return Prediction("dependency_recovery", RECOVERY,
                      threshold_text(objectives, "dependency_recovery"),
                      f"about {text_seconds(total)} after the dependency answers again",
                      total <= objectives.dependency_recovery,
                      (" + ".join(parts) + f" = {total:g} s" if parts
                       else "nothing delays the return")
                      + " (the dependency's own start comes on top)")


register(CheckDef(
    name=RECOVERY, params=RecoveryParams, judge=_recovery,
    marker=TimelineMark("first success", After.LAST_HEAL),
    summary="requests succeed again within the stated bound of the dependency's return",
    objectives=(ObjectiveHook("dependency_recovery", _recovery_objective, _recovery_predict),)))
