"""check_distribution on even, weighted, lopsided, intruded and starved spreads of answers, and
the even_distribution objective judged on it."""

from __future__ import annotations

from typing import Any

import pytest
from synthetic_history import SERVERS, T0, request
from test_objective_judges import expectations, judged, predicted

from lab.checks import Verdict, check_distribution
from lab.checks.distribution import share_band
from lab.expectations import UpstreamServer
from lab.history import History, Outcome
from lab.objectives import Objectives

pytestmark = pytest.mark.covers("check:distribution", "objective:even_distribution")

EVEN = dict.fromkeys(SERVERS, 1)


def spread(*counts: int, start: float = 0.0, servers: tuple[str, ...] = SERVERS) -> History:
    """A history whose ok answers come counts[k] times from servers[k]."""
    history = History()
    for k, count in enumerate(counts):
        for _ in range(count):
            i = len(history.requests)
            history.requests.append(request(i, start + i * 0.01, backend=servers[k]))
    return history


def test_round_robin_passes() -> None:
    """An exact round-robin spread of 400 answers passes; the band says how it was derived."""
    result = check_distribution(spread(134, 133, 133), EVEN)
    assert result.verdict is Verdict.PASS, result
    assert "one-step change" in result.derivation and "false alarm of 0.0001" in result.derivation


def test_the_weights_set_the_shares() -> None:
    """weight=2 on backend-1: half its answers is what the configuration implies (pass), and a
    third each is not (fail)."""
    weighted = {"backend-1": 2, "backend-2": 1, "backend-3": 1}
    needed = share_band(weighted, 1).required
    half = needed // 2
    assert check_distribution(spread(half * 2, half, half), weighted).verdict is Verdict.PASS
    third = (4 * half) // 3
    result = check_distribution(spread(third, third, third), weighted)
    assert result.verdict is Verdict.FAIL, result
    assert any(d.startswith("backend-1: share 0.3333") for d in result.details), result.details


def test_one_weight_step_is_caught_at_the_required_sample() -> None:
    """The band is sized so that weights 2:1:1 against an even configuration fail at the
    smallest sample the check accepts."""
    needed = share_band(EVEN, 1).required
    assert 300 < needed < 400          # 3 equal weights: a one-step change moves a share by 1/6
    quarter = needed // 4 + 1
    assert check_distribution(spread(2 * quarter, quarter, quarter), EVEN).verdict is Verdict.FAIL


def test_lopsided_fails() -> None:
    """60/20/20 over 450 answers is outside the band."""
    result = check_distribution(spread(270, 90, 90), EVEN)
    assert result.verdict is Verdict.FAIL
    assert any("backend-1" in d for d in result.details)


def test_an_intruding_server_fails_whatever_the_sample() -> None:
    """One answer from a server the upstream does not list fails, even under the sample size."""
    history = spread(40, 40, 40)
    history.requests.append(request(999, 5.0, backend="backend-4"))
    result = check_distribution(history, EVEN)
    assert result.verdict is Verdict.FAIL, result
    assert "not a primary server" in result.details[0] and "backend-4 (1)" in result.measured


def test_starved_server_fails() -> None:
    """A server with no answers at all fails."""
    result = check_distribution(spread(200, 200, 0), EVEN)
    assert result.verdict is Verdict.FAIL
    assert any("no answers" in d for d in result.details)


def test_too_few_requests_is_unknown() -> None:
    """Under the derived sample size the check cannot tell a one-step change: unknown."""
    result = check_distribution(spread(100, 100, 100), EVEN)
    assert result.verdict is Verdict.UNKNOWN
    assert "only 300 ok answers" in result.measured
    assert check_distribution(spread(200, 200, 200), EVEN, min_requests=1000).verdict \
        is Verdict.UNKNOWN


def test_window_and_non_ok_ignored() -> None:
    """Only ok answers inside the window count."""
    history = spread(134, 133, 133)
    # Errors never count, however lopsided.
    history.requests += [request(2000 + i, 1.0, backend="backend-1", outcome=Outcome.FAIL,
                                 status=503) for i in range(200)]
    assert check_distribution(history, EVEN).verdict is Verdict.PASS
    # Answers after the window would make it lopsided if they counted.
    history.requests += [request(900 + i, 50.0 + i, backend="backend-1") for i in range(300)]
    assert check_distribution(history, EVEN).verdict is Verdict.FAIL
    assert check_distribution(history, EVEN, (T0, T0 + 10)).verdict is Verdict.PASS


def _judged(history: History, weights: dict[str, int]) -> tuple[Any, Any]:
    """The check and its objective, against an upstream with these weights."""
    members = tuple(UpstreamServer(n, f"{n}:8000", w) for n, w in weights.items())
    expect = expectations(members=members)
    result, _ = judged("distribution", history, expect=expect)
    return result, predicted("distribution", expect=expect)


def test_failures_counted_leave_the_shares_unjudged() -> None:
    """Once NGINX counted failed tries against a server, its counters set its share, not its
    weight: a lopsided split is then unknown with the reason, never a fail (a backend starved
    to a hundredth of a core timed out, was ejected, and got 0.08 of the answers: the check
    said "fail" on a correct NGINX). An intruder still fails."""
    result = check_distribution(spread(30, 175, 177), EVEN, counted={"backend-1": 28})
    assert result.verdict is Verdict.UNKNOWN, result
    assert "failures counted (backend-1 28)" in result.measured
    assert any("set by failures" in d for d in result.details), result.details
    assert check_distribution(spread(134, 133, 133), EVEN,
                              counted={"backend-1": 0}).verdict is Verdict.PASS
    history = spread(30, 175, 177)
    history.requests.append(request(999, 5.0, backend="backend-4"))
    assert check_distribution(history, EVEN, counted={"backend-1": 3}).verdict is Verdict.FAIL


def test_even_distribution_objective_fails_a_weighted_split_that_conforms() -> None:
    """weight=4 on backend-1, obeyed: conformance passes on its weights' shares (given enough
    answers), the even_distribution objective fails, and the prediction said so."""
    weighted = {"backend-1": 4, "backend-2": 1, "backend-3": 1}
    sixth = share_band(weighted, 1).required // 6 + 1
    result, predictions = _judged(spread(4 * sixth, sixth, sixth), weighted)
    assert result.verdict is Verdict.PASS, result
    objective = result.objectives[0]
    assert objective.name == "even_distribution" and objective.verdict is Verdict.FAIL, objective
    prediction = predictions["even_distribution"]
    assert prediction.reachable is False and "backend-1 4" in prediction.arithmetic


def test_even_distribution_objective_passes_an_even_split_and_is_unknown_when_short() -> None:
    """An even split passes; too few answers to judge is unknown, and an intruder fails it."""
    result, _ = _judged(spread(134, 133, 133), EVEN)
    assert result.objectives[0].verdict is Verdict.PASS, result.objectives
    result, _ = _judged(spread(50, 50, 50), EVEN)
    assert result.objectives[0].verdict is Verdict.UNKNOWN, result.objectives
    history = spread(134, 133, 133)
    history.requests.append(request(999, 5.0, backend="backup-1"))
    result, _ = _judged(history, EVEN)
    assert result.objectives[0].verdict is Verdict.FAIL, result.objectives
    result, _ = judged("distribution", spread(134, 133, 133),
                       objectives=Objectives(even_distribution=False))
    assert result.objectives == ()
