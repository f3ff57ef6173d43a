"""check_readmission on simulated runs where the healed backend returns in time, late, or never."""

from __future__ import annotations

import pytest
from synthetic_history import Simulation, policy

from lab.checks import Verdict, check_readmission

pytestmark = pytest.mark.covers("check:readmission")

TARGET = "backend-2"


def readmit(history, rate: float = 20.0):
    """check_readmission of TARGET under the default policy (fail_timeout 4 s)."""
    return check_readmission(history, policy(), TARGET, rate)


def test_served_again_within_fail_timeout_passes() -> None:
    """A backend probed and served within fail_timeout of its heal passes."""
    result = readmit(Simulation().run())
    assert result.verdict is Verdict.PASS, result
    assert dict(result.values)["measured_s"] <= dict(result.values)["bound_s"]
    assert "0.000 + 4 + 1 + 0.150 + 2 = 7.150 s" in result.derivation


def test_slow_start_within_ready_mark_passes() -> None:
    """A slow restart is allowed for when the runner marks when the target became ready."""
    result = readmit(Simulation(ready_after_heal_s=12, duration_s=40).run())
    assert result.verdict is Verdict.PASS, result
    assert dict(result.values)["ready_delay_s"] == 12


def test_readmitted_too_late_fails() -> None:
    """Served again only ~12 s after the heal, with no ready mark, is too late."""
    result = readmit(Simulation(ready_after_heal_s=12, mark_ready=False, duration_s=40).run())
    assert result.verdict is Verdict.FAIL
    assert "too late" in result.measured


def test_never_served_again_fails() -> None:
    """A backend that never answers again after the heal fails."""
    result = readmit(Simulation(ready_after_heal_s=100, mark_ready=False, duration_s=30).run())
    assert result.verdict is Verdict.FAIL
    assert "never served again" in result.measured


def test_traffic_ending_before_bound_is_unknown() -> None:
    """Traffic that stops right after the heal cannot show a re-admission."""
    result = readmit(Simulation(ready_after_heal_s=100, mark_ready=False, duration_s=13).run())
    assert result.verdict is Verdict.UNKNOWN


def test_no_heal_is_unknown() -> None:
    """A fault never healed has no re-admission to time."""
    assert readmit(Simulation(heal_at=None).run()).verdict is Verdict.UNKNOWN


def test_crash_is_unknown() -> None:
    """A crash inside the check yields unknown."""
    assert readmit(None).verdict is Verdict.UNKNOWN  # type: ignore[arg-type]
