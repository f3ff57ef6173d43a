"""Latency inside and outside fault windows.

Outside faults the p99 must stay under a stated bound. Inside, a request that first tried the
failed backend pays one failed attempt ``c`` before NGINX retries it elsewhere, so the p99
may grow by ``c`` and no more. A latency fault adds ``added`` (the injected round trip) to the
requests it slows: the inside p99 must then reach at least half of it (else the fault never
took effect) and stay within ``c + added + outside p99 + tolerance``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lab.checks.base import CheckResult, Verdict, never_crashes
from lab.checks.ejection import FailureMode, cost_derivation, failed_attempt_cost
from lab.history import History, Outcome
from lab.topology.nginx_conf import UpstreamPolicy

NAME = "latency"


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of non-empty ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@never_crashes(NAME)
def check_latency(history: History, policy: UpstreamPolicy, mode: FailureMode | None,
                  outside_p99_bound_s: float = 0.5, tolerance_s: float = 0.5,
                  added_latency_s: float = 0.0) -> CheckResult:
    """Whether ok-request p99 stays bounded outside faults and within one failed try inside."""
    end = max((r.sent_at for r in history.requests), default=0.0) + 1.0
    windows = [(inject.at, heal.at if heal is not None else end)
               for inject, heal in history.fault_windows()]
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
                  f"{cost_derivation(policy, mode)}; added = {added_latency_s:g} s injected round trip; "
                  f"inside p99 <= c + added + outside p99 + tolerance = "
                  f"{c:g} + {added_latency_s:g} + {out99:.3f} + {tolerance_s:g} = {inside_bound:.3f} s "
                  "(one failed attempt before the retry)")
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
