"""check_latency inside and outside fault windows."""

from __future__ import annotations

import pytest
from synthetic_history import T0, Simulation, policy, request

from lab.checks import FailureMode, Verdict, check_latency, percentile
from lab.history import FaultEvent, FaultPhase, History

pytestmark = pytest.mark.covers("check:latency")


def test_failover_latency_within_one_failed_attempt_passes() -> None:
    """Requests paying one connect timeout inside the fault pass."""
    result = check_latency(Simulation().run(), policy(), FailureMode.UNREACHABLE)
    assert result.verdict is Verdict.PASS, result
    assert "1 + 0 + 0.002 + 0.5 = 1.502 s" in result.derivation


def test_inside_beyond_one_failed_attempt_fails() -> None:
    """Requests paying 3 s where the policy's connect timeout is 1 s fail."""
    result = check_latency(Simulation(cost_s=3.0).run(), policy(), FailureMode.UNREACHABLE)
    assert result.verdict is Verdict.FAIL
    assert any("inside p99" in d for d in result.details)


def test_slow_outside_fails() -> None:
    """A p99 of 0.8 s outside faults fails the default 0.5 s bound."""
    history = History()
    history.requests += [request(i, i * 0.1, latency=0.8 if i % 10 == 0 else 0.01)
                         for i in range(200)]
    result = check_latency(history, policy(), None)
    assert result.verdict is Verdict.FAIL
    assert any("outside p99" in d for d in result.details)


def test_no_fault_judges_outside_only() -> None:
    """Without faults only the outside bound applies."""
    history = History()
    history.requests += [request(i, i * 0.1, latency=0.01) for i in range(100)]
    assert check_latency(history, policy(), None).verdict is Verdict.PASS


def test_no_traffic_is_unknown() -> None:
    """No ok request outside faults leaves nothing to compare against."""
    assert check_latency(History(), policy(), None).verdict is Verdict.UNKNOWN


def test_percentile_nearest_rank() -> None:
    """Nearest-rank quantiles of 1..100."""
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0


def test_crash_is_unknown() -> None:
    """A crash inside the check yields unknown."""
    assert check_latency(None, policy(), None).verdict is Verdict.UNKNOWN  # type: ignore[arg-type]


def _latency_fault_history(slow_s: float) -> History:
    """200 requests 0.1 s apart; a latency fault on backend-1 from +5 s to
    +15 s slowing its third."""
    history = History()
    for i in range(200):
        at = i * 0.1
        slowed = 5 <= at < 15 and i % 3 == 0
        history.requests.append(request(i, at, latency=0.002 + (slow_s if slowed else 0.0)))
    history.faults += [FaultEvent("latency", "backend-1", FaultPhase.INJECT, T0 + 5, T0 + 4.9),
                       FaultEvent("latency", "backend-1", FaultPhase.HEAL, T0 + 15, T0 + 14.9)]
    return history


def test_injected_latency_that_shows_passes() -> None:
    """A 0.4 s injected round trip seen by the clients stays within c + added +
    outside p99 + tolerance."""
    result = check_latency(_latency_fault_history(0.4), policy(), None, added_latency_s=0.4)
    assert result.verdict is Verdict.PASS, result
    assert "and >= 0.200 s" in result.expected


def test_injected_latency_that_never_shows_fails() -> None:
    """A latency fault whose delay never reached the clients fails:
    the fault did not take effect."""
    result = check_latency(_latency_fault_history(0.0), policy(), None, added_latency_s=0.4)
    assert result.verdict is Verdict.FAIL
    assert any("did not reach the clients" in d for d in result.details)
