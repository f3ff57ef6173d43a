"""The rate_limits objective: the zone NGINX runs and what it let through, against the target,
with no slack for requests in the same millisecond."""

from __future__ import annotations

import pytest
from limit_req_sim import LOADED, Send, simulate
from test_objective_judges import judged, predicted
from test_rate_limit_model import nginx_log, rule, simultaneous, spaced

from lab.checks.limit_req_model import Limiter
from lab.config import LabConfig
from lab.expectations import Expectations
from lab.history import History
from lab.topology.expect import claimed
from lab.verdict import Verdict

pytestmark = pytest.mark.covers("objective:rate_limits")

AUTH = {"location": "/api/auth/"}


def with_auth_burst(burst: int) -> Expectations:
    """The default configuration with the auth zone's burst changed."""
    zones = LabConfig().nginx.rate_limits
    return claimed(LabConfig().with_overrides(
        "nginx", rate_limits=(zones[0].model_copy(update={"burst": burst}), *zones[1:])))


def test_a_zone_with_burst_6_fails_10_rs_burst_5() -> None:
    """The checklist's auth target (10 r/s burst 5) fails a zone with burst 6 on its
    configuration alone, whatever the traffic showed, and on the seventh request of a burst."""
    six = with_auth_burst(6)
    calm = History(access_log=nginx_log(rule(burst=6), spaced(5, 200)))
    _, objectives = judged("rate-limit", calm, AUTH, expect=six)
    result = objectives["rate_limits"]
    assert result.verdict is Verdict.FAIL, result
    assert "burst 6 > 5" in result.measured
    burst = History(access_log=nginx_log(rule(burst=6), simultaneous(12)))
    _, objectives = judged("rate-limit", burst, AUTH, expect=six)
    beyond = objectives["rate_limits"]
    assert beyond.verdict is Verdict.FAIL and beyond.value == 1
    assert "1 of 7 accepted requests beyond the target's bucket" in beyond.measured
    assert predicted("rate-limit", AUTH, expect=six)["rate_limits"].reachable is False


def test_no_slack_for_requests_in_one_millisecond() -> None:
    """An NGINX that lets 7 logins through in one millisecond exceeds burst 5 (6 at once) even
    where the configuration claims burst 5: the acceptances are judged too, without slack."""
    history = History(access_log=nginx_log(rule(burst=6), simultaneous(12)))
    _, objectives = judged("rate-limit", history, AUTH, expect=claimed(LabConfig()))
    assert objectives["rate_limits"].verdict is Verdict.FAIL
    assert objectives["rate_limits"].value == 1


def test_the_configured_zone_within_the_target_passes() -> None:
    """Burst 5 lets 6 through at once and 13 of 15 logins 50 ms apart: within 10 r/s burst 5."""
    default = claimed(LabConfig())
    for arrivals in (simultaneous(12), spaced(15, 50)):
        history = History(access_log=nginx_log(rule(burst=5), arrivals))
        _, objectives = judged("rate-limit", history, AUTH, expect=default)
        assert objectives["rate_limits"].verdict is Verdict.PASS, objectives
        assert objectives["rate_limits"].value == 0
    assert predicted("rate-limit", AUTH)["rate_limits"].reachable is True


def test_nginx_clocks_do_not_fail_a_zone_at_the_target() -> None:
    """Simulated NGINX (two workers, cached clocks, preemption) at exactly the target passes
    the measured side on every seed: its acceptances fit the target's bucket on NGINX's clocks."""
    default = claimed(LabConfig())
    zones = {r.location: Limiter.of(r) for r in default.nginx.rate_limits}
    sends = ([Send("h", i * 50.0, "POST", "/api/auth/login") for i in range(15)]
             + [Send("h", 2000.0, "POST", "/api/auth/login")] * 8
             + [Send("h", i * 10.0) for i in range(150)])
    for seed in range(10):
        history = History(access_log=simulate(zones, sends, seed, machine=LOADED))
        for location in ("/api/auth/", "/api/"):
            _, objectives = judged("rate-limit", history, {"location": location},
                                   expect=default)
            assert objectives["rate_limits"].verdict is Verdict.PASS, (seed, objectives)


def test_nothing_through_is_unknown_and_no_limit_fails() -> None:
    """No accepted request leaves the measured side empty: unknown while the configuration
    fits; a location the configuration does not limit fails, traffic or not."""
    _, objectives = judged("rate-limit", History(), AUTH, expect=claimed(LabConfig()))
    assert objectives["rate_limits"].verdict is Verdict.UNKNOWN
    zones = LabConfig().nginx.rate_limits
    unlimited = claimed(LabConfig().with_overrides("nginx", rate_limits=zones[1:]))
    history = History(access_log=nginx_log(rule(burst=1000), simultaneous(3)))
    _, objectives = judged("rate-limit", history, AUTH, expect=unlimited)
    assert objectives["rate_limits"].verdict is Verdict.FAIL
    assert "no limit_req at all" in objectives["rate_limits"].measured
