"""Re-admission: whether NGINX sent a healed backend client traffic again when its
configuration says.

The judgement is the replay of NGINX's counters from its access log (``upstream_replay``),
from the heal on: a server skipped after ``max_fails`` failures becomes eligible again once
``fail_timeout`` whole seconds have passed since the last failure counted against it; the next
try routed to it is the probe, and a probe that fails (the backend not ready yet) skips it for
another ``fail_timeout``; a probe that succeeds resets its counter and puts it back in
rotation. Routing to it earlier, or skipping it when its turn came, is a decision against the
configuration. The objective reads the first answer it served a client after its heal.
"""

from __future__ import annotations

import math

from lab.checks.base import CheckResult, Measured, ObjectiveResult, Prediction, Verdict
from lab.checks.ejection import (
    first_fault_window,
    observation_end,
    pool_replay,
    violation_lines,
)
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
from lab.checks.upstream_replay import AttemptEnd
from lab.expectations import Expectations
from lab.history import History, ready_mark
from lab.objectives import Objectives, threshold_text

NAME = "readmission"


def expected_text(expectations: Expectations, target: str) -> str:
    """What the configuration says about a healed ``target``, in one sentence."""
    server = expectations.upstream.peer(target)
    if server.max_fails == 0:
        return f"{target} served again as soon as it answers (max_fails=0 never skips it)"
    return (f"{target} tried again fail_timeout={server.fail_timeout_s:g} s after its last "
            "counted failure (whole seconds), at its turn; back if that try succeeds")


def check_readmission(history: History, expectations: Expectations, target: str) -> CheckResult:
    """Whether NGINX probed and re-admitted the healed ``target`` when its counters say."""
    expected = expected_text(expectations, target)
    window = first_fault_window(history, target)
    if window is None or window[1] is None:
        return CheckResult(NAME, Verdict.UNKNOWN, f"no heal event for {target}", expected,
                           "nothing to time the re-admission from")
    heal = window[1]
    end = observation_end(history)
    if end is None or end <= heal.at:
        return CheckResult(NAME, Verdict.UNKNOWN, "no traffic after the heal", expected,
                           "nothing to judge the re-admission by")
    ready_at = next((m.at for m in sorted(history.marks, key=lambda m: m.at)
                     if m.name == ready_mark(target) and m.at >= heal.at), None)
    r = pool_replay(history, expectations)
    server = expectations.upstream.peer(target)
    attempts = [a for a in r.attempts_on(target) if a.started_at >= heal.started_at]
    served = next((a for a in attempts if a.end is AttemptEnd.RESPONSE
                   and a.status.startswith("2")), None)
    until = served.started_at if served is not None else end
    counted = [c for c in r.changes if c.backend == target and c.counted and c.at < until]
    last = counted[-1] if counted else None
    mine = [v for v in r.violations if v.backend == target and heal.started_at <= v.at <= end]
    ready_delay = 0.0 if ready_at is None else ready_at - heal.at
    values: list[tuple[str, float]] = [("ready_delay_s", ready_delay),
                                       ("violations", float(len(mine))),
                                       ("probes", float(len(attempts)))]
    derivation = [f"ready {ready_delay:.3f} s after the heal (mark {ready_mark(target)!r}"
                  + ("" if ready_at is not None else ", absent: 0") + ")"]
    if last is not None and server.max_fails:
        second = math.floor(last.at + 1e-9)
        eligible = second + server.fail_timeout_s + 1
        values.append(("eligible_s", eligible - heal.at))
        derivation.append(
            f"last failure counted at +{last.at - heal.at:.3f} s: eligible from its whole "
            f"second + fail_timeout + 1 = +{eligible - heal.at:.3f} s after the heal")
    failed_probes = sum(1 for a in attempts if a.failed and (served is None
                                                            or a.started_at < served.started_at))
    if failed_probes:
        derivation.append(f"{failed_probes} tries after the heal failed (the backend not "
                          "ready yet), each skipping it for another fail_timeout")
    derivation.append(f"{r.judged} routing decisions replayed; balancer: {r.balancer_note}")
    details = violation_lines(mine, heal.at)
    routed_before = any(a.started_at < window[0].started_at for a in r.attempts_on(target))
    if served is None and not mine and not routed_before:
        # hash / ip_hash on a key the traffic never varies: it never went to the target while
        # it was healthy either, so its absence after the heal says nothing.
        return CheckResult(NAME, Verdict.UNKNOWN, f"the traffic never went to {target}, "
                           "before the fault or after the heal", expected,
                           "; ".join([*derivation, f"balancer: {r.balancer_note}"]), details,
                           tuple(values))
    if served is None:
        ran = end - heal.at
        values.append(("traffic_after_heal_s", ran))
        eligible_s = next((v for k, v in values if k == "eligible_s"), 0.0)
        if mine:
            return CheckResult(NAME, Verdict.FAIL, f"never served again; {len(mine)} decisions "
                               "against the configuration", expected, "; ".join(derivation),
                               details, tuple(values))
        verdict = Verdict.UNKNOWN if ran < max(eligible_s, ready_delay) + 1 else Verdict.FAIL
        why = ("traffic ended before it was due" if verdict is Verdict.UNKNOWN
               else "though its counters let NGINX choose it")
        return CheckResult(NAME, verdict, f"not served again in the {ran:.3f} s after the heal "
                           f"({why})", expected, "; ".join(derivation), details, tuple(values))
    # A backend can answer before the heal's action returns (it started inside it).
    measured_s = max(0.0, served.started_at - heal.at)
    values.append(("measured_s", measured_s))
    verdict = Verdict.FAIL if mine else Verdict.PASS
    return CheckResult(NAME, verdict, f"back in rotation {measured_s:.3f} s after the heal; "
                       f"{len(mine)} decisions against the configuration", expected,
                       "; ".join(derivation), details, tuple(values))


# -- registration -------------------------------------------------------------------------------


class ReadmissionParams(CheckParams):
    target: str


def _judge(ctx: CheckContext, params: ReadmissionParams) -> CheckResult:
    return check_readmission(ctx.history, ctx.expectations, ctx.node(params.target))


def _describe(ctx: CheckContext, params: ReadmissionParams) -> str:
    return expected_text(ctx.expectations, ctx.node(params.target))


def _objective(result: CheckResult, objectives: Objectives, ctx: CheckContext,
               params: ReadmissionParams) -> ObjectiveResult:
    limit = objectives.readmission
    how = "the first 2xx the healed backend served a client after its heal"
    measured = result.value("measured_s")
    if measured is not None:
        return measured_objective("readmission", objectives, value=measured,
                                  passed=measured <= limit,
                                  measured=f"serving again {measured:.3f} s after the heal",
                                  derivation=how)
    ran = result.value("traffic_after_heal_s")
    if ran is not None and ran >= limit:
        return measured_objective("readmission", objectives, value=None, passed=False,
                                  measured=f"not serving again {ran:.3f} s after the heal",
                                  derivation=how)
    return measured_objective("readmission", objectives, value=None, passed=None,
                              measured=f"not measured ({result.measured})", derivation=how)


def _predict(ctx: CheckContext, params: ReadmissionParams, objectives: Objectives) -> Prediction:
    policy = ctx.expectations.upstream
    g = len(policy.servers) / (ctx.rate_per_s or 1.0)
    earliest = policy.fail_timeout_s if policy.ejects else 0.0
    latest = earliest + policy.connect_timeout_s + g
    arithmetic = (f"fail_timeout + c_probe + g = {earliest:g} + {policy.connect_timeout_s:g} + "
                  f"{g:.3f} = {latest:.3f} s after the backend is ready (its start-up adds to it)"
                  if policy.ejects else "never ejected, so routed again as soon as it answers: "
                  f"c_probe + g = {policy.connect_timeout_s:g} + {g:.3f} = {latest:.3f} s")
    reachable = (None if earliest <= objectives.readmission < latest
                 else latest <= objectives.readmission)
    return Prediction("readmission", NAME, threshold_text(objectives, "readmission"),
                      f"serving again within {latest:.3f} s of readiness", reachable, arithmetic,
                      high=latest)


def _measure(result: CheckResult) -> Measured | None:
    """When the healed backend served again, after it was ready (seconds); never served again
    in t seconds of traffic after its readiness is "not before t"."""
    ready = result.value("ready_delay_s") or 0.0
    if (measured := result.value("measured_s")) is not None:
        # It may serve before the lab saw it ready (its readiness probe is polled).
        since = max(0.0, measured - ready)
        return Measured.exactly(since, f"{since:.3f} s after readiness")
    ran = result.value("traffic_after_heal_s")
    if ran is not None:
        return Measured(ran - ready, math.inf, f"not served in the {ran - ready:.3f} s of "
                        "traffic after readiness")
    return None


register(CheckDef(
    name=NAME, params=ReadmissionParams, judge=_judge, describe=_describe, client_filter=False,
    label=lambda p: f"{NAME} {p.target}", marker=TimelineMark("first 2xx", After.HEAL),
    summary="whether NGINX probed and re-admitted a healed backend when its counters say (its "
            "access log replayed from the heal)",
    objectives=(ObjectiveHook("readmission", _objective, _predict, _measure),)))
