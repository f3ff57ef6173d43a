"""Fail-fast and recovery checks on synthetic histories."""

from __future__ import annotations

import pytest

from lab.checks.base import Verdict
from lab.checks.dependency import check_fail_fast, check_recovery
from lab.faults import FAULTS
from lab.history import FaultEvent, FaultPhase, History, Outcome, RequestRecord

pytestmark = pytest.mark.covers("check:fail-fast", "check:recovery")

T0 = 1_800_000_000.0


def outage(latency_failed: float | None, *, recover_after: float = 1.0) -> History:
    """PgBouncer down from +2 s to +5 s; requests every 0.1 s; failures answered
    in ``latency_failed``."""
    history = History()
    stopped = FAULTS.get("stop").effect
    history.faults += [FaultEvent("stop", "pgbouncer", FaultPhase.INJECT, T0 + 2, T0 + 1.9,
                                  effect=stopped),
                       FaultEvent("stop", "pgbouncer", FaultPhase.HEAL, T0 + 5, T0 + 4.9,
                                  effect=stopped)]
    for i in range(100):
        at = T0 + i * 0.1
        down = T0 + 2 <= at < T0 + 5 + recover_after
        outcome = (Outcome.UNKNOWN if down and latency_failed is None
                   else (Outcome.FAIL if down else Outcome.OK))
        history.requests.append(RequestRecord(
            id=i, client="reads", method="GET", path="/api/conversations", intended_at=at,
            sent_at=at, latency_s=(latency_failed if down else 0.005),
            status=(503 if down and latency_failed else 200),
            backend="backend-1", outcome=outcome))
    return history


def test_fast_failures_pass() -> None:
    """503s answered in 0.1 s are well within 3 servers x 2 s."""
    assert check_fail_fast(outage(0.1), servers=3, db_budget_s=2.0).verdict is Verdict.PASS


def test_hanging_requests_fail() -> None:
    """Requests that never got an answer during the outage hung: the check fails."""
    result = check_fail_fast(outage(None), servers=3, db_budget_s=2.0)
    assert result.verdict is Verdict.FAIL
    assert "no answer" in result.details[0]


def test_slow_failures_beyond_the_derived_bound_fail() -> None:
    """A 503 after 8 s exceeds 3 x 2 s + 0.5 s."""
    assert check_fail_fast(outage(8.0), servers=3, db_budget_s=2.0).verdict is Verdict.FAIL


def test_recovery_within_bound_passes_and_beyond_fails() -> None:
    """Success 1 s after the heal passes a 3 s bound; 4 s after it fails."""
    assert check_recovery(outage(0.1, recover_after=1.0), bound_s=3.0,
                          derivation="d").verdict is Verdict.PASS
    late = check_recovery(outage(0.1, recover_after=4.0), bound_s=3.0, derivation="d")
    assert late.verdict is Verdict.FAIL and dict(late.values)["measured_s"] > 3.0


def test_no_fault_is_unknown() -> None:
    """Without a fault there is nothing to recover from."""
    assert check_recovery(History(), bound_s=1.0, derivation="d").verdict is Verdict.UNKNOWN


def test_a_request_that_hung_and_then_succeeded_fails() -> None:
    """A request sent during the outage that waited 7 s and succeeded after the heal still hung."""
    history = outage(0.1)
    slow = history.requests[25]
    history.requests[25] = RequestRecord(
        id=slow.id, client=slow.client, method="GET", path=slow.path, intended_at=slow.intended_at,
        sent_at=slow.sent_at, latency_s=7.0, status=200, backend="backend-2", outcome=Outcome.OK)
    result = check_fail_fast(history, servers=3, db_budget_s=2.0)
    assert result.verdict is Verdict.FAIL
    assert "7.000 s, status 200" in result.details[0]


def test_fail_fast_objective_and_prediction() -> None:
    """Failures answered in 20 ms meet 5 s; in 6 s, or with no answer at all, they miss it;
    nothing sent during an outage is unknown; the prediction is tries x budget."""
    from test_objective_judges import judged, predicted, tightened

    from lab.config import LabConfig
    from lab.topology.expect import claimed

    params = {"client": "reads"}
    _, objectives = judged("fail-fast", outage(0.02), params)
    assert objectives["fail_fast"].verdict is Verdict.PASS, objectives
    _, objectives = judged("fail-fast", outage(6.0), params,
                           objectives=tightened(fail_fast=5))
    assert objectives["fail_fast"].verdict is Verdict.FAIL
    _, objectives = judged("fail-fast", outage(None), params)
    assert (objectives["fail_fast"].verdict is Verdict.FAIL
            and "without a status" in objectives["fail_fast"].measured)
    quiet = outage(0.02)
    quiet.requests.clear()
    _, objectives = judged("fail-fast", quiet, params)
    assert objectives["fail_fast"].verdict is Verdict.UNKNOWN
    p = predicted("fail-fast", params)["fail_fast"]
    assert p.reachable is True and "x the backend's database budget 2 s = 6 s" in p.arithmetic, p
    fast = claimed(LabConfig().with_overrides("backend", dependency_timeout_s=0.25))
    assert predicted("fail-fast", params, expect=fast,
                     objectives=tightened(fail_fast=3))["fail_fast"].reachable is True
    assert predicted("fail-fast", params,
                     objectives=tightened(fail_fast=3))["fail_fast"].reachable is False
