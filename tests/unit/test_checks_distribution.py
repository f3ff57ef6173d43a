"""check_distribution on even, lopsided and starved spreads of answers."""

from __future__ import annotations

import pytest
from synthetic_history import SERVERS, T0, request

from lab.checks import Verdict, check_distribution
from lab.history import History, Outcome

pytestmark = pytest.mark.covers("check:distribution")


def spread(*counts: int, start: float = 0.0) -> History:
    """A history whose ok answers come counts[k] times from SERVERS[k]."""
    history = History()
    for k, count in enumerate(counts):
        for _ in range(count):
            i = len(history.requests)
            history.requests.append(request(i, start + i * 0.01, backend=SERVERS[k]))
    return history


def test_round_robin_passes() -> None:
    """An exact round-robin spread passes."""
    result = check_distribution(spread(100, 100, 100), SERVERS)
    assert result.verdict is Verdict.PASS, result
    assert "4 * sqrt(0.3333 * 0.6667 / 300)" in result.derivation


def test_lopsided_fails() -> None:
    """60/20/20 over 300 answers is outside the binomial band."""
    result = check_distribution(spread(180, 60, 60), SERVERS)
    assert result.verdict is Verdict.FAIL
    assert any("backend-1" in d for d in result.details)


def test_starved_server_fails() -> None:
    """A server with no answers at all fails."""
    result = check_distribution(spread(150, 150, 0), SERVERS)
    assert result.verdict is Verdict.FAIL
    assert any("no answers" in d for d in result.details)


def test_too_few_requests_is_unknown() -> None:
    """Under min_requests answers the check cannot judge."""
    assert check_distribution(spread(30, 30, 30), SERVERS).verdict is Verdict.UNKNOWN


def test_window_and_non_ok_ignored() -> None:
    """Only ok answers inside the window count."""
    history = spread(100, 100, 100)
    # Errors never count, however lopsided.
    history.requests += [request(2000 + i, 1.0, backend="backend-1", outcome=Outcome.FAIL,
                                 status=503) for i in range(200)]
    assert check_distribution(history, SERVERS).verdict is Verdict.PASS
    # Answers after the window would make it lopsided if they counted.
    history.requests += [request(900 + i, 50.0 + i, backend="backend-1") for i in range(200)]
    assert check_distribution(history, SERVERS).verdict is Verdict.FAIL
    assert check_distribution(history, SERVERS, (T0, T0 + 10)).verdict is Verdict.PASS


def test_crash_is_unknown() -> None:
    """A crash inside the check yields unknown."""
    assert check_distribution(None, SERVERS).verdict is Verdict.UNKNOWN  # type: ignore[arg-type]
