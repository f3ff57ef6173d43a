"""Load profiles: the registry, typed parameters, stages, the schedule and VU sizing."""

from __future__ import annotations

import itertools

import pytest

from lab.errors import ConfigError
from lab.load.profiles import (
    PROFILES,
    REQUEST_TIMEOUT_S,
    RequestKind,
    Stage,
    build_plan,
    parse_stage,
)
from lab.load.thresholds import LoadThresholds, thresholds_from

DEFAULT = LoadThresholds()


def test_every_profile_builds_with_its_defaults() -> None:
    """Each registered profile makes a plan that sends something, shares summing to one."""
    assert set(PROFILES.names()) == {
        "smoke",
        "load",
        "stress",
        "spike",
        "soak",
        "breakpoint",
        "conversation",
    }
    for definition in PROFILES:
        plan = build_plan(definition.name, {}, DEFAULT)
        assert plan.peak_rate > 0 and plan.duration_s > 0
        assert sum(k.share for k in plan.kinds) == pytest.approx(1.0)


def test_load_defaults_to_the_checklist_rate() -> None:
    """The load profile holds 1,500 req/s after a 5 s ramp from zero."""
    plan = build_plan("load", {}, DEFAULT)
    assert plan.start_rate == 0
    assert plan.stages == (Stage(5, 1500), Stage(30, 1500))
    assert plan.scheduled() == pytest.approx(0.5 * 5 * 1500 + 30 * 1500)


def test_unknown_parameter_is_refused_with_what_the_profile_takes() -> None:
    """A misspelt parameter names the profile's own parameters; nothing falls through."""
    with pytest.raises(ConfigError) as info:
        build_plan("smoke", {"rat": 3}, DEFAULT)
    assert (
        "rat: unknown parameter (profile smoke takes vus, max_vus, path, auth, rate, duration_s)"
        in info.value.message
    )


def test_unknown_profile_names_the_known_ones() -> None:
    """An unknown profile is a ConfigError with the nearest name."""
    with pytest.raises(ConfigError, match="did you mean 'smoke'"):
        build_plan("smok", {}, DEFAULT)


def test_parameter_types_and_units() -> None:
    """Durations take units; a negative rate or a path without '/' is refused."""
    plan = build_plan("smoke", {"duration_s": "2m", "rate": 3}, DEFAULT)
    assert plan.duration_s == 120
    for bad in ({"rate": -1}, {"path": "health"}, {"duration_s": "3 weeks"}):
        with pytest.raises(ConfigError):
            build_plan("smoke", bad, DEFAULT)


def test_stages_replace_the_profile_shape() -> None:
    """--stage replaces the stages; the start rate stays the profile's unless given."""
    stages = (parse_stage("10s:100"), parse_stage("1m:500"))
    plan = build_plan("load", {}, DEFAULT, stages=stages)
    assert plan.stages == (Stage(10, 100), Stage(60, 500)) and plan.start_rate == 0
    assert build_plan("load", {}, DEFAULT, stages=stages, start_rate=50).start_rate == 50


@pytest.mark.parametrize("text", ["10s", "x:100", "10s:-5", "0s:10", "10s:abc"])
def test_bad_stage_is_refused(text: str) -> None:
    """A stage is DURATION:RATE with a positive duration and a rate in [0, 100000]."""
    with pytest.raises(ConfigError, match="--stage"):
        parse_stage(text)


def test_schedule_matches_k6_iteration_times() -> None:
    """Iteration i starts when the rate's integral reaches i + 1 (measured against k6 1.1:
    a 0 -> 50/s ramp over 2 s started iterations 0.283, 0.400, 0.490 s after the start)."""
    plan = build_plan("load", {"rate": 50, "ramp_s": 2, "duration_s": 1}, DEFAULT)
    (kind,) = plan.kinds
    assert [round(plan.time_of(i, kind), 3) for i in range(3)] == [0.283, 0.4, 0.49]
    constant = build_plan("smoke", {"rate": 20, "duration_s": 2}, DEFAULT)
    assert [constant.time_of(i, constant.kinds[0]) for i in range(3)] == pytest.approx(
        [0.05, 0.1, 0.15]
    )
    assert constant.time_of(40, constant.kinds[0]) is None


def test_ramp_down_has_a_root_inside_the_stage() -> None:
    """On a falling ramp the intended times still grow and stay within the stage."""
    plan = build_plan("smoke", {}, DEFAULT, stages=(Stage(2, 0),), start_rate=100)
    kind = plan.kinds[0]
    times = [plan.time_of(i, kind) for i in range(0, 99, 7)]
    assert all(a < b for a, b in itertools.pairwise(times))
    assert 0 < times[-1] <= 2


def test_conversation_shares_and_own_login_bound() -> None:
    """Reads, writes and logins split the rate; logins carry their own p95 bound."""
    plan = build_plan("conversation", {"rate": 100}, DEFAULT)
    by = {k.name: k for k in plan.kinds}
    assert set(by) == {"reads", "writes", "logins"}
    assert by["reads"].auth and by["writes"].body == "message" and by["logins"].body == "login"
    assert by["logins"].p95_s == 1.0
    assert build_plan("conversation", {"logins": 0}, DEFAULT).kinds[-1].name == "writes"


def test_kind_rates_are_whole_iterations_per_minute() -> None:
    """k6 takes integer targets per timeUnit: each kind's rate is rounded per minute."""
    plan = build_plan("conversation", {"rate": 7}, DEFAULT)
    for kind in plan.kinds:
        _, stages = plan.kind_rates(kind)
        assert all(float(s.target * 60).is_integer() for s in stages)


def test_vus_sized_from_the_peak_or_given() -> None:
    """Pre-allocated VUs cover 200 ms at the peak, and up to the peak rate times the request
    timeout may be added (every request in flight until it times out); given VUs (a starved
    generator) are kept."""
    plan = build_plan("load", {}, DEFAULT)
    pre, most = plan.vus_for(plan.kinds[0])
    assert pre == 300 and most == 300 + 1500 * REQUEST_TIMEOUT_S
    starved = build_plan("load", {"vus": 1}, DEFAULT)
    assert starved.vus_for(starved.kinds[0]) == (1, 1)


def test_breakpoint_always_aborts_on_fail() -> None:
    """The breakpoint ramp stops at its first failed threshold, whatever was asked."""
    assert build_plan("breakpoint", {}, DEFAULT).thresholds.abort_on_fail
    assert not build_plan("load", {}, DEFAULT).thresholds.abort_on_fail


def test_thresholds_become_k6_thresholds_per_scenario() -> None:
    """Bounds become tag-filtered k6 thresholds; abortOnFail wraps each expression."""
    bounds = thresholds_from({"p95_s": "150ms", "error_rate": "0.5%"}, "test")
    assert bounds.k6(("main",)) == {
        "http_req_duration{scenario:main}": ["p(95)<150"],
        "http_req_failed{scenario:main}": ["rate<0.005"],
    }
    aborting = bounds.model_copy(update={"abort_on_fail": True, "p95_s": None})
    (entry,) = aborting.k6(("reads",))["http_req_failed{scenario:reads}"]
    assert entry == {"threshold": "rate<0.005", "abortOnFail": True, "delayAbortEval": "5s"}
    assert "http_req_duration{scenario:reads}" not in aborting.k6(("reads",))


def test_unknown_threshold_is_refused() -> None:
    """A threshold record refuses unknown keys and out-of-range values, naming the field."""
    with pytest.raises(ConfigError, match="unknown threshold"):
        thresholds_from({"p95": "1s"}, "test")
    with pytest.raises(ConfigError, match="error_rate"):
        thresholds_from({"error_rate": "120%"}, "test")


def test_describe_reads_like_the_schedule() -> None:
    """The one-line schedule names ramps and holds."""
    assert build_plan("load", {}, DEFAULT).describe() == "0 -> 1500/s over 5s, 1500/s for 30s"
    assert RequestKind("main", "GET", "/", 1.0).share == 1.0
