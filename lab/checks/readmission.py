"""Re-admission: how soon after a backend heals NGINX sends it client traffic again.

The model (docs/semantics.md §1): a skipped server is probed by one request once
``fail_timeout`` has passed since its last counted failure; a failed probe ejects it for
another ``fail_timeout``. So after the heal, the backend first needs to be ready, then waits
at most one ``fail_timeout`` (plus one failed probe costing ``c_probe`` if it came too early),
then at most one round-robin turn ``g`` for a request to be routed to it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from lab.checks.base import CheckResult, ObjectiveResult, Prediction, Verdict, never_crashes
from lab.checks.ejection import first_fault_window
from lab.checks.registry import (
    CheckContext,
    CheckDef,
    ClientParams,
    ObjectiveHook,
    measured_objective,
    register,
)
from lab.expectations import UpstreamPolicy
from lab.history import History, ready_mark
from lab.objectives import Objectives, threshold_text

NAME = "readmission"


@never_crashes(NAME)
def check_readmission(history: History, policy: UpstreamPolicy, target: str, rate_per_s: float,
                      tolerance_s: float = 2.0) -> CheckResult:
    """Whether ``target`` served a client 2xx again within the bound after its heal."""
    window = first_fault_window(history, target)
    if window is None or window[1] is None:
        return CheckResult(NAME, Verdict.UNKNOWN, f"no heal event for {target}", "-",
                           "nothing to time the re-admission from")
    heal = window[1]
    ready_at = next((m.at for m in sorted(history.marks, key=lambda m: m.at)
                     if m.name == ready_mark(target) and m.at >= heal.at), None)
    ready_delay = 0.0 if ready_at is None else ready_at - heal.at
    g = len(policy.servers) / rate_per_s
    c_probe = policy.connect_timeout_s
    bound = ready_delay + policy.fail_timeout_s + c_probe + g + tolerance_s
    derivation = (
        f"ready_delay = {ready_delay:.3f} s (heal to mark {ready_mark(target)!r}"
        + ("" if ready_at is not None else ", absent: 0") + "); "
        f"g = servers / rate = {len(policy.servers)} / {rate_per_s:g} = {g:.3f} s; "
        f"c_probe = proxy_connect_timeout = {c_probe:g} s (a probe of a still-dead backend); "
        f"bound = ready_delay + fail_timeout + c_probe + g + tolerance = {ready_delay:.3f} + "
        f"{policy.fail_timeout_s:g} + {c_probe:g} + {g:.3f} + {tolerance_s:g} = {bound:.3f} s "
        "(tolerance covers NGINX's whole-second failure clock)"
    )
    expected = f"first 2xx from {target} within {bound:.3f} s of the heal"
    values: list[tuple[str, float]] = [("bound_s", bound), ("ready_delay_s", ready_delay),
                                       ("g_s", g)]
    after = [r for r in history.requests if r.sent_at >= heal.at]
    if not after:
        return CheckResult(NAME, Verdict.UNKNOWN, "no client traffic after the heal", expected,
                           derivation, values=tuple(values))
    served = [r.sent_at for r in after
              if r.backend == target and r.status is not None and 200 <= r.status < 300]
    if not served:
        ran_for = max(r.sent_at for r in after) - heal.at
        values.append(("traffic_after_heal_s", ran_for))
        if ran_for < bound:
            return CheckResult(NAME, Verdict.UNKNOWN, f"not served again, but traffic ended "
                               f"{ran_for:.3f} s after the heal, before the bound", expected,
                               derivation, values=tuple(values))
        return CheckResult(NAME, Verdict.FAIL, f"never served again after the heal "
                           f"({len(after)} requests over {ran_for:.3f} s)", expected, derivation,
                           values=tuple(values))
    measured_s = min(served) - heal.at
    values.append(("measured_s", measured_s))
    verdict = Verdict.PASS if measured_s <= bound else Verdict.FAIL
    late = "" if verdict is Verdict.PASS else " (too late)"
    return CheckResult(NAME, verdict, f"first 2xx from {target} {measured_s:.3f} s after the "
                       f"heal{late}", expected, derivation, values=tuple(values))


# -- registration -------------------------------------------------------------------------------


class ReadmissionParams(ClientParams):
    target: str
    tolerance_s: Annotated[float, Field(ge=0)] = 2.0


def _judge(ctx: CheckContext, params: ReadmissionParams) -> CheckResult:
    return check_readmission(ctx.history, ctx.expectations.upstream, ctx.node(params.target),
                             ctx.rate_per_s, tolerance_s=params.tolerance_s)


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
                      f"serving again within {latest:.3f} s of readiness", reachable, arithmetic)


register(CheckDef(
    name=NAME, params=ReadmissionParams, judge=_judge,
    summary="how soon a healed backend served clients again, against ready + fail_timeout + one "
            "probe + one round-robin turn",
    objectives=(ObjectiveHook("readmission", _objective, _predict),)))
