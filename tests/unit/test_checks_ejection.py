"""check_ejection against simulated NGINX runs that must pass and runs that must fail."""

from __future__ import annotations

import pytest
from synthetic_history import T0, Simulation, policy

from lab.checks import FailureMode, Verdict, check_ejection, upstream_attempts
from lab.history import AccessLogEntry, History

pytestmark = pytest.mark.covers("check:ejection")

TARGET = "backend-2"


def eject(history: History, mode: FailureMode = FailureMode.UNREACHABLE, rate: float = 20.0,
          **policy_changes: object):
    """check_ejection of TARGET under the lab's default policy with some changes."""
    return check_ejection(history, policy(**policy_changes), TARGET, mode, rate)


@pytest.mark.parametrize(("mode", "cost"), [
    (FailureMode.UNREACHABLE, 1.0), (FailureMode.REFUSED, 0.0), (FailureMode.FROZEN, 5.0),
])
@pytest.mark.parametrize("max_fails", [1, 3, 5])
def test_nginx_model_passes(mode: FailureMode, cost: float, max_fails: int) -> None:
    """A run following NGINX's rules passes for each failure mode and max_fails."""
    history = Simulation(cost_s=cost, max_fails=max_fails, fail_timeout_s=10, heal_at=18,
                         duration_s=25).run()
    result = eject(history, mode, max_fails=max_fails, fail_timeout_s=10.0)
    assert result.verdict is Verdict.PASS, result
    values = dict(result.values)
    assert values["lower_s"] <= values["measured_s"] <= values["upper_s"]
    assert values["client_errors"] == 0


def test_tries_refused_while_a_kill_is_under_way_count_at_once() -> None:
    """A slow kill: the process is gone 0.3 s before its address, so tries in that time are
    refused at once and eject the backend before the action returns; the window says so."""
    history = Simulation(rate_per_s=55.0, effect_lead_s=0.3, lead_cost_s=0.0).run()
    result = eject(history, rate=55.0)
    assert result.verdict is Verdict.PASS, result
    values = dict(result.values)
    assert values["refused_during_action"] >= 3 and values["measured_s"] < 0
    assert "k = 3 tries refused at once" in result.derivation
    # Where every try costs the connect timeout, the window stays where it was.
    slow = eject(Simulation(rate_per_s=55.0, effect_lead_s=0.3).run(), rate=55.0)
    assert slow.verdict is Verdict.PASS and dict(slow.values)["lower_s"] > 0.7


def test_derivation_shows_the_arithmetic() -> None:
    """The derivation spells out g, c and the window from the policy numbers."""
    result = eject(Simulation().run())
    assert "3 / 20 = 0.150 s" in result.derivation
    assert "proxy_connect_timeout = 1 s" in result.derivation
    assert ("[max(0, 1 + 1*0.150 - 0.050), 1 + 3*1*0.150 + 0.5] = [1.100, 1.950] s"
            in result.derivation)
    assert result.measured.startswith("last routed attempt +")


def test_fault_taking_effect_before_its_action_returns_still_passes() -> None:
    """A kill that bites before `docker kill` returns (measured:
    0.12 s) widens the lower bound by that time."""
    result = eject(Simulation(effect_lead_s=0.12).run())
    assert result.verdict is Verdict.PASS, result
    assert "u = 0.120 s" in result.derivation


def test_never_ejected_fails() -> None:
    """NGINX that keeps routing to the dead backend all fault long fails the check."""
    result = eject(Simulation(max_fails=0).run())
    assert result.verdict is Verdict.FAIL
    assert "not ejected within the fault window" in result.measured


def test_ejected_too_late_fails() -> None:
    """Ejection after eight failures where the policy says three is too late."""
    result = eject(Simulation(max_fails=8).run())
    assert result.verdict is Verdict.FAIL
    assert "too late" in result.measured


def test_client_errors_when_retry_expected_fail() -> None:
    """Failed attempts reaching clients fail the check when the policy retries them."""
    result = eject(Simulation(retry=False).run())
    assert result.verdict is Verdict.FAIL
    assert dict(result.values)["client_errors"] > 0


def test_client_errors_expected_without_timeout_retry() -> None:
    """Without 'timeout' in proxy_next_upstream, client errors are expected and pass."""
    result = eject(Simulation(retry=False).run(), next_upstream=("error",))
    assert result.verdict is Verdict.PASS, result
    assert "lacks timeout" in result.expected


def test_post_errors_not_judged_when_unreachable() -> None:
    """POSTs are not retried once sent, so their errors are reported but not judged."""
    result = eject(Simulation(retry=False, method="POST").run())
    assert result.verdict is Verdict.PASS, result
    assert any("non-idempotent" in d for d in result.details)


def test_per_worker_counters_widen_the_window() -> None:
    """Without a zone, counters per worker multiply max_fails by worker_processes."""
    history = Simulation(max_fails=9).run()
    assert eject(history, zone=False, worker_processes=3).verdict is Verdict.PASS
    assert eject(history, zone=True, worker_processes=3).verdict is Verdict.FAIL


def test_max_fails_zero_expects_never_ejected() -> None:
    """max_fails=0 expects attempts throughout the fault, and fails if they stop."""
    assert eject(Simulation(max_fails=0).run(), max_fails=0).verdict is Verdict.PASS
    result = eject(Simulation(max_fails=3).run(), max_fails=0)
    assert result.verdict is Verdict.FAIL
    assert result.measured.startswith("ejected")


def test_short_fault_window_is_unknown() -> None:
    """A fault healed before ejection could be observed yields unknown."""
    result = eject(Simulation(max_fails=0, heal_at=3.5).run())
    assert result.verdict is Verdict.UNKNOWN


def test_slow_traffic_is_unknown() -> None:
    """Traffic too slow to separate routed attempts from re-probes yields unknown."""
    result = eject(Simulation(rate_per_s=1, duration_s=20).run(), rate=1.0)
    assert result.verdict is Verdict.UNKNOWN
    assert "too slow" in result.measured


def test_no_inject_event_is_unknown() -> None:
    """A history without a fault on the target yields unknown."""
    history = Simulation().run()
    history.faults.clear()
    assert eject(history).verdict is Verdict.UNKNOWN


def test_no_access_log_is_unknown() -> None:
    """Without access log entries there are no attempts to judge."""
    history = Simulation().run()
    history.access_log.clear()
    assert eject(history).verdict is Verdict.UNKNOWN


def test_crash_is_unknown() -> None:
    """A check that crashes yields unknown, never a pass."""
    result = check_ejection(None, policy(), TARGET, FailureMode.REFUSED, 20.0)  # type: ignore[arg-type]
    assert result.verdict is Verdict.UNKNOWN
    assert result.measured == "check crashed"


def test_attempt_start_times() -> None:
    """Attempt k starts after the response times of the attempts before it."""
    entry = AccessLogEntry(
        msec=T0 + 1.5, request_time_s=1.5, method="GET", uri="/", status=200,
        upstream_addrs=("a", "b"), upstream_backends=("backend-2", "backend-3"),
        upstream_statuses=("504", "200"), upstream_times_s=(1.2, 0.3), limit_req_status="-")
    first, second = upstream_attempts([entry])
    assert (first.backend, first.started_at) == ("backend-2", pytest.approx(T0))
    assert (second.backend, second.started_at) == ("backend-3", pytest.approx(T0 + 1.2))
