"""Load distribution: each backend's share of the ok answers, against the split its weights set.

NGINX's weighted round robin gives primary server ``i`` the share ``p_i = w_i / W`` of the
answers (``W``: the weights' sum; ``UpstreamPolicy.weights``). Every answering server is
judged: an answer from a server that is not a primary of the upstream (a backup while all
primaries live, a host the configuration does not name) fails the check.

The band is derived, not chosen. Each share is judged as if every answer were an independent
draw (binomial): round robin spreads more evenly than that, so the band is conservative for
a correct NGINX. Two numbers set it:

- the false alarm a correct configuration may raise: ``FALSE_ALARM`` for the whole check,
  split over the ``n`` servers and both tails (Bonferroni), gives ``z_a``; the band is
  ``p_i +/- z_a * sqrt(p_i (1 - p_i) / N)``;
- the smallest change it must catch: one weight changed by one step. ``w_i + 1`` moves
  server ``i``'s share by ``(W - w_i) / (W (W + 1))``, the least of all one-step changes
  (``w_i - 1`` moves it further); with power ``POWER`` (``z_b``) that change is caught when
  ``N >= ((z_a sqrt(p(1-p)) + z_b sqrt(p'(1-p'))) / delta)^2``. With fewer answers the check
  is ``unknown``: the sample could not have told a one-step change from noise.

Once NGINX counted a failed try against a server in the window, the weights alone no longer
set the shares (a failed try is answered by the next server, and max_fails of them take the
server out of rotation): the check is then ``unknown`` and names the failures; the ejection
check judges them.

docs/power-objectives.md shows the resulting detection rates on seeded simulations.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Annotated, Literal

from pydantic import Field

from lab.checks.base import CheckResult, ObjectiveResult, Prediction, Verdict
from lab.checks.ejection import pool_replay
from lab.checks.registry import (
    CheckContext,
    CheckDef,
    ClientParams,
    ObjectiveHook,
    measured_objective,
    register,
)
from lab.history import History, Outcome
from lab.objectives import Objectives, threshold_text

NAME = "distribution"
# A correct configuration fails the check in at most 1 run in 10,000 (whole check, all servers).
FALSE_ALARM = 1e-4
# A one-step weight change is caught in at least 99 of 100 runs of the sample size required.
POWER = 0.99


@dataclass(frozen=True)
class ShareBand:
    """The expected shares, the band around each for ``answers`` answers, and the least
    sample that catches a one-step weight change."""

    shares: Mapping[str, float]
    half_widths: Mapping[str, float]
    z_alarm: float
    z_power: float
    smallest_step: float            # the least share change one weight step makes
    required: int                   # answers needed to catch it with POWER
    derivation: str


def share_band(weights: Mapping[str, int], answers: int, *, false_alarm: float = FALSE_ALARM,
               power: float = POWER) -> ShareBand:
    """The band of each server's share for ``answers`` ok answers, and how it was derived."""
    total = sum(weights.values())
    shares = {node: w / total for node, w in weights.items()}
    z_alarm = NormalDist().inv_cdf(1 - false_alarm / (2 * len(weights)))
    z_power = NormalDist().inv_cdf(power)
    half = {node: (z_alarm * math.sqrt(p * (1 - p) / answers) if answers else math.inf)
            for node, p in shares.items()}
    # The least-moving one-step change: some w_i + 1 (a decrease moves the share further).
    required, smallest, which = 0, math.inf, ""
    for node, w in weights.items():
        if len(weights) == 1:
            break
        p, changed = shares[node], (w + 1) / (total + 1)
        delta = changed - p
        need = math.ceil(((z_alarm * math.sqrt(p * (1 - p))
                           + z_power * math.sqrt(changed * (1 - changed))) / delta) ** 2)
        if delta < smallest:
            smallest, which = delta, node
        required = max(required, need)
    weights_text = ", ".join(f"{n} {w}" for n, w in weights.items())
    derivation = (
        f"weights {weights_text} (W = {total}): p_i = w_i / W; band p_i +/- z_a * "
        f"sqrt(p_i(1-p_i)/N), z_a = {z_alarm:.2f} for a false alarm of {false_alarm:g} over "
        f"{len(weights)} servers, both tails; N = {answers}"
        + (f"; the least one-step change (weight of {which} + 1) moves its share by "
           f"{smallest:.4f}, caught with power {power:g} (z_b = {z_power:.2f}) from N >= "
           f"{required}" if which else ""))
    return ShareBand(shares, half, z_alarm, z_power, smallest, required, derivation)


def check_distribution(history: History, weights: Mapping[str, int],
                       window: tuple[float, float] | None = None,
                       min_requests: int = 0,
                       counted: Mapping[str, int] | None = None) -> CheckResult:
    """Whether every answering server is a primary and got its weight's share of the ok answers
    (X-Backend-Id) in the window. ``counted``: the failures NGINX counted against each server
    in the window; any at all and the weights alone no longer set the shares."""
    if not weights:
        return CheckResult(NAME, Verdict.UNKNOWN, "no servers given", "-", "-")
    answered = [r for r in history.requests
                if r.outcome is Outcome.OK and r.backend is not None
                and (window is None or window[0] <= r.sent_at < window[1])]
    counts = Counter(r.backend for r in answered)
    total = len(answered)
    band = share_band(weights, total)
    needed = max(band.required, min_requests)
    expected = (", ".join(f"{s} {band.shares[s]:.4f} +/- {band.half_widths[s]:.4f}"
                          for s in weights)
                + f"; no other server answering; at least {needed} ok answers")
    shares = {s: counts.get(s, 0) / total if total else 0.0 for s in set(weights) | set(counts)}
    measured = ", ".join(f"{s} {shares[s]:.4f} ({counts.get(s, 0)})" for s in weights)
    intruders = sorted(set(counts) - set(weights))
    if intruders:
        measured += "; also " + ", ".join(f"{s} ({counts[s]})" for s in intruders)
    values = (("requests", float(total)), ("required", float(needed)),
              *((f"share:{s}", shares[s]) for s in weights),
              *((f"expected:{s}", band.shares[s]) for s in weights),
              *((f"count:{s}", float(counts.get(s, 0))) for s in weights),
              ("intruders", float(sum(counts[s] for s in intruders))),
              ("tolerance", max(band.half_widths.values())))
    details = [f"answers from {s}, which is not a primary server of the upstream: {counts[s]}"
               for s in intruders]
    off = [s for s in weights if abs(shares[s] - band.shares[s]) > band.half_widths[s]]
    details += [f"{s}: share {shares[s]:.4f} outside {band.shares[s] - band.half_widths[s]:.4f}-"
                f"{band.shares[s] + band.half_widths[s]:.4f}"
                + (" (no answers at all)" if counts.get(s, 0) == 0 else "") for s in off]
    failing = {s: n for s, n in (counted or {}).items() if n}
    values += (("failures_counted", float(sum(failing.values()))),)
    if intruders:
        verdict = Verdict.FAIL
    elif failing:
        # A failed try is answered by the next server, and max_fails of them take the server out
        # of rotation: its counters, not its weight, then set its share (measured: a backend
        # starved to a hundredth of a core timed out, was ejected, and got 0.08 of the answers).
        verdict = Verdict.UNKNOWN
        named = ", ".join(f"{s} {n}" for s, n in sorted(failing.items()))
        details.append(f"NGINX counted failed tries against {named} in the window: a share "
                       "set by failures, not by the balancer (the ejection check judges those)")
        measured = f"not judged: failures counted ({named}): {measured}"
    elif total < needed:
        verdict = Verdict.UNKNOWN
        details.append(f"only {total} ok answers: {needed} are needed to tell a one-step weight "
                       "change from a fair split's noise")
        measured = f"only {total} ok answers (< {needed}): {measured}"
    else:
        verdict = Verdict.FAIL if off else Verdict.PASS
    return CheckResult(NAME, verdict, measured, expected, band.derivation, tuple(details), values)


# -- registration -------------------------------------------------------------------------------


class DistributionParams(ClientParams):
    # A floor above the derived sample size (never below it).
    min_requests: Annotated[int, Field(ge=0)] = 0
    during: Literal["all", "steady"] = "all"    # the whole run, or only before any fault


def _window(history: History, params: DistributionParams) -> tuple[float, float] | None:
    if params.during != "steady":
        return None
    first = min((f.at for f in history.faults), default=None)
    end = (first or history.mark_at("end")
           or max((r.sent_at for r in history.requests), default=0.0))
    return (history.mark_at("start") or 0.0, end)


def _counted(ctx: CheckContext, window: tuple[float, float] | None) -> dict[str, int]:
    """The failures NGINX counted against each server in the window, from the pool's replay."""
    changes = pool_replay(ctx.history, ctx.expectations).changes
    return dict(Counter(c.backend for c in changes
                        if c.counted and (window is None or window[0] <= c.at < window[1])))


def _judge(ctx: CheckContext, params: DistributionParams) -> CheckResult:
    window = _window(ctx.history, params)
    return check_distribution(ctx.history, ctx.expectations.upstream.weights, window,
                              min_requests=params.min_requests, counted=_counted(ctx, window))


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
    band = share_band(ctx.expectations.upstream.weights, answers)
    needed = max(band.required, params.min_requests)
    shares = ", ".join(f"{s} {band.shares[s]:.4f} +/- {band.half_widths[s]:.4f}"
                       for s in band.shares)
    return (f"{shares} for the ~{answers} answers planned ({rate:g} req/s for "
            f"{end - start:g} s); at least {needed} needed"
            + (" (too few planned: unknown)" if answers < needed else ""))


def _even_objective(result: CheckResult, objectives: Objectives, ctx: CheckContext,
                    params: DistributionParams) -> ObjectiveResult | None:
    if not objectives.even_distribution:
        return None
    weights = ctx.expectations.upstream.weights
    how = ("each answering server's share of the ok answers against 1/n of the primary servers, "
           "within the same binomial band as conformance")
    total = result.value("requests")
    if result.value("failures_counted"):
        return measured_objective("even_distribution", objectives, value=None, passed=None,
                                  measured=result.measured, derivation=how)
    if total is None:
        return measured_objective("even_distribution", objectives, value=None, passed=None,
                                  measured=result.measured, derivation=how)
    even = share_band(dict.fromkeys(weights, 1), int(total))
    counts = {s: result.value(f"count:{s}") or 0.0 for s in weights}
    intruding = result.value("intruders") or 0.0
    off = [s for s in weights
           if abs((counts[s] / total if total else 0.0) - even.shares[s]) > even.half_widths[s]]
    spread = ", ".join(f"{s} {counts[s] / total:.3f}" for s in weights) if total else "none"
    if intruding:
        return measured_objective("even_distribution", objectives, value=intruding, passed=False,
                                  measured=f"{intruding:.0f} answers from servers outside the "
                                  f"upstream; shares {spread}", derivation=how)
    if total < even.required:
        return measured_objective("even_distribution", objectives, value=None, passed=None,
                                  measured=f"only {total:.0f} ok answers (< {even.required})",
                                  derivation=how)
    return measured_objective("even_distribution", objectives, value=float(len(off)),
                              passed=not off,
                              measured=(f"shares {spread}; uneven: {', '.join(off)}" if off
                                        else f"shares {spread}, each within the band of 1/"
                                        f"{len(weights)}"), derivation=how)


def _even_predict(ctx: CheckContext, params: DistributionParams,
                  objectives: Objectives) -> Prediction | None:
    if not objectives.even_distribution:
        return None
    weights = ctx.expectations.upstream.weights
    return Prediction("even_distribution", NAME, threshold_text(objectives, "even_distribution"),
                      "an even split" if len(set(weights.values())) <= 1 else "an uneven split",
                      len(set(weights.values())) <= 1,
                      "weights " + ", ".join(f"{s} {w}" for s, w in weights.items())
                      + " (round robin gives each w / W)")


register(CheckDef(
    name=NAME, params=DistributionParams, judge=_judge, describe=_describe,
    summary="each backend's share of the ok answers within a derived binomial band of its "
            "weight's share, and no other server answering",
    objectives=(ObjectiveHook("even_distribution", _even_objective, _even_predict),)))
