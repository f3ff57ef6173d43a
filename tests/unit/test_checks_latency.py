"""check_latency inside and outside fault windows."""

from __future__ import annotations

from synthetic_history import Simulation, policy, request

from lab.checks import FailureMode, Verdict, check_latency, percentile
from lab.history import History


def test_failover_latency_within_one_failed_attempt_passes() -> None:
    """Requests paying one connect timeout inside the fault pass."""
    result = check_latency(Simulation().run(), policy(), FailureMode.UNREACHABLE)
    assert result.verdict is Verdict.PASS, result
    assert "1 + 0.002 + 0.5 = 1.502 s" in result.derivation


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
