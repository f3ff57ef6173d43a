"""check_availability: success ratio against the SLO, and lost acknowledged writes."""

from __future__ import annotations

import pytest
from synthetic_history import T0, request

from lab.checks import Verdict, check_availability
from lab.history import History, Outcome

pytestmark = pytest.mark.covers("check:availability", "check:durability")


def history(ok: int, failed: int = 0, unknown: int = 0) -> History:
    """A history with the given numbers of outcomes."""
    result = History()
    outcomes = [Outcome.OK] * ok + [Outcome.FAIL] * failed + [Outcome.UNKNOWN] * unknown
    for i, outcome in enumerate(outcomes):
        result.requests.append(request(i, i * 0.01, outcome=outcome,
                                       status=200 if outcome is Outcome.OK else 502))
    return result


def test_meets_slo_passes() -> None:
    """999 of 1000 meets a 0.999 SLO."""
    result = check_availability(history(999, failed=1))
    assert result.verdict is Verdict.PASS, result
    assert "allows floor(1000 * (1 - 0.999)) = 1 non-ok" in result.derivation


def test_below_slo_fails() -> None:
    """998 of 1000 misses a 0.999 SLO."""
    assert check_availability(history(998, failed=2)).verdict is Verdict.FAIL


def test_unknown_is_not_success() -> None:
    """Timeouts count against the SLO."""
    result = check_availability(history(998, unknown=2))
    assert result.verdict is Verdict.FAIL
    assert dict(result.values)["unknown"] == 2


def test_lost_acknowledged_write_fails() -> None:
    """An acknowledged write missing from the store fails, whatever the ratio."""
    result = check_availability(history(100), acknowledged_write_ids=frozenset({1, 2, 3}),
                                stored_write_ids=frozenset({1, 3, 4}))
    assert result.verdict is Verdict.FAIL
    assert any("lost acknowledged writes: 2" in d for d in result.details)


def test_all_writes_stored_passes() -> None:
    """Every acknowledged write stored (and extra unacknowledged ones) passes."""
    result = check_availability(history(100), acknowledged_write_ids=frozenset({1, 2}),
                                stored_write_ids=frozenset({1, 2, 7}))
    assert result.verdict is Verdict.PASS, result


def test_write_check_needs_both_sets() -> None:
    """Acknowledged ids without stored ids cannot be judged."""
    result = check_availability(history(100), acknowledged_write_ids=frozenset({1}))
    assert result.verdict is Verdict.UNKNOWN


def test_window_and_empty() -> None:
    """Only requests inside the window count; none at all is unknown."""
    mixed = history(500, failed=500)
    assert check_availability(mixed, window=(T0, T0 + 5.0)).verdict is Verdict.PASS
    assert check_availability(mixed).verdict is Verdict.FAIL
    assert check_availability(History()).verdict is Verdict.UNKNOWN


def test_crash_is_unknown() -> None:
    """A crash inside the check yields unknown."""
    assert check_availability(None).verdict is Verdict.UNKNOWN  # type: ignore[arg-type]
