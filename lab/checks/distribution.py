"""Load distribution: each backend's share of successful answers, against an even split.

The tolerance is binomial (each answer lands on a given backend with probability 1/n).
Round robin spreads more evenly than independent draws, so the band is conservative: a share
outside it means the balancing is really off, not noise.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Annotated, Literal

from pydantic import Field

from lab.checks.base import CheckResult, Verdict, never_crashes
from lab.checks.registry import CheckContext, CheckDef, ClientParams, register
from lab.history import History, Outcome

NAME = "distribution"


def share_band(servers: int, answers: int, sigmas: float) -> tuple[float, float, str]:
    """Each server's share p = 1/n, its binomial tolerance for ``answers`` ok answers, and the
    arithmetic."""
    p = 1 / servers
    tolerance = sigmas * math.sqrt(p * (1 - p) / answers) if answers else math.inf
    return p, tolerance, (f"p = 1/{servers} = {p:.4f} per server; tolerance = sigmas * "
                          f"sqrt(p(1-p)/N) = {sigmas:g} * sqrt({p:.4f} * {1 - p:.4f} / "
                          f"{answers}) = {tolerance:.4f}")


@never_crashes(NAME)
def check_distribution(history: History, servers: tuple[str, ...],
                       window: tuple[float, float] | None = None, sigmas: float = 4.0,
                       min_requests: int = 100) -> CheckResult:
    """Whether every server got about 1/n of the ok answers (X-Backend-Id) in the window."""
    if not servers:
        return CheckResult(NAME, Verdict.UNKNOWN, "no servers given", "-", "-")
    answered = [r for r in history.requests
                if r.outcome is Outcome.OK and r.backend is not None
                and (window is None or window[0] <= r.sent_at < window[1])]
    counts = Counter(r.backend for r in answered)
    total = len(answered)
    p, tolerance, derivation = share_band(len(servers), total, sigmas)
    expected = f"each share {p:.4f} +/- {tolerance:.4f}, every server answering"
    shares = {s: counts.get(s, 0) / total if total else 0.0 for s in servers}
    measured = ", ".join(f"{s} {shares[s]:.4f} ({counts.get(s, 0)})" for s in servers)
    values = (("requests", float(total)),
              *((f"share:{s}", shares[s]) for s in servers), ("tolerance", tolerance))
    strangers = sorted(set(counts) - set(servers))
    details = tuple(f"answers from {s}, which is not a listed server: {counts[s]}"
                    for s in strangers)
    if total < min_requests:
        return CheckResult(NAME, Verdict.UNKNOWN, f"only {total} ok answers (< {min_requests})",
                           expected, derivation, details, values)
    off = [s for s in servers if counts.get(s, 0) == 0 or abs(shares[s] - p) > tolerance]
    details += tuple(f"{s}: share {shares[s]:.4f} outside {p - tolerance:.4f}-{p + tolerance:.4f}"
                     + (" (no answers at all)" if counts.get(s, 0) == 0 else "") for s in off)
    return CheckResult(NAME, Verdict.FAIL if off else Verdict.PASS, measured, expected,
                       derivation, details, values)


# -- registration -------------------------------------------------------------------------------


class DistributionParams(ClientParams):
    sigmas: Annotated[float, Field(gt=0)] = 4.0
    min_requests: Annotated[int, Field(ge=1)] = 100
    during: Literal["all", "steady"] = "all"    # the whole run, or only before any fault


def _judge(ctx: CheckContext, params: DistributionParams) -> CheckResult:
    history = ctx.history
    window = None
    if params.during == "steady":
        first = min((f.at for f in history.faults), default=None)
        end = (first or history.mark_at("end")
               or max((r.sent_at for r in history.requests), default=0.0))
        window = (history.mark_at("start") or 0.0, end)
    return check_distribution(history, ctx.expectations.upstream.servers, window,
                              sigmas=params.sigmas, min_requests=params.min_requests)


def _describe(ctx: CheckContext, params: DistributionParams) -> str:
    """The band for the answers the plan sends: the stream's rate over the planned time (until
    the first fault, for ``during: steady``)."""
    history = ctx.history
    start = history.mark_at("start") or 0.0
    end = history.mark_at("end") or start + ctx.planned_s
    if params.during == "steady":
        end = min((f.at for f in history.faults), default=end)
    rate = ctx.stream_rates.get(params.client, ctx.rate_per_s) if params.client else ctx.rate_per_s
    answers = int(rate * (end - start))
    p, tolerance, _ = share_band(len(ctx.expectations.upstream.servers), answers, params.sigmas)
    return (f"each share {p:.4f} +/- {tolerance:.4f} for the ~{answers} answers planned "
            f"({rate:g} req/s for {end - start:g} s): {params.sigmas:g} sigmas of a binomial "
            f"split, at least {params.min_requests} answers")


register(CheckDef(
    name=NAME, params=DistributionParams, judge=_judge, describe=_describe,
    summary="each backend's share of the ok answers, within a binomial tolerance of 1/n"))
