"""`lab explain`: each check's expectation, derived before any traffic from the configuration
in force by the check's own arithmetic (judging the planned history, or its describe)."""

from __future__ import annotations

import math

from typer.testing import CliRunner

from lab.checks.distribution import share_band
from lab.cli.app import app
from lab.cli.scenarios import _planned
from lab.config import LabConfig
from lab.expectations import duration_names
from lab.history import FaultPhase
from lab.objectives import defaults
from lab.scenarios.judge import PLAN_ORIGIN, planned_history
from lab.scenarios.loader import load_scenario
from lab.scenarios.steps import definition_of
from lab.topology.expect import claimed


def _expected(name: str, config: LabConfig) -> dict[str, str]:
    return dict(_planned(load_scenario(name), config, defaults()).expected)


def test_the_planned_history_has_the_steps_faults_at_their_planned_times() -> None:
    """failover: the kill at +2 s, its heal after the planned wait, then the end mark."""
    scenario = load_scenario("failover")
    names = duration_names(claimed(LabConfig()), 25.0)
    history = planned_history(scenario, names)
    inject, heal = history.faults[:2]
    assert (inject.fault, inject.target, inject.phase) == ("kill", "backend-1", FaultPhase.INJECT)
    assert inject.at == PLAN_ORIGIN + 2
    assert heal.phase is FaultPhase.HEAL
    assert math.isclose(heal.at - inject.at, names["connect_timeout"]
                        + names["max_fails"] * names["interval"] + 2)
    planned = sum(definition_of(s).planned_s(s, names, 60.0) for s in scenario.steps)
    assert math.isclose(history.mark_at("end"), PLAN_ORIGIN + planned)


def test_ejection_and_readmission_follow_the_configuration() -> None:
    """The rules move with lab.toml: max_fails, fail_timeout and the timeouts in force are the
    ones each check states (the checks' own text, not a restatement)."""
    default = _expected("failover", LabConfig())
    assert default["ejection backend-1"].startswith("backend-1 in rotation until max_fails=3 "
                                                    "failures count")
    assert "fail_timeout=10 s" in default["ejection backend-1"]
    assert "timeouts 1 s connect, 5 s read" in default["ejection backend-1"]
    assert "fail_timeout=10 s after its last counted failure" in \
        default["readmission backend-1"]
    changed = _expected("failover", LabConfig().with_overrides("nginx", max_fails=5,
                                                               fail_timeout_s=4))
    ejection = changed["ejection backend-1"]
    assert "max_fails=5" in ejection and "fail_timeout=4 s" in ejection
    assert "fail_timeout=4 s" in changed["readmission backend-1"]


def test_checks_that_need_observations_still_say_what_they_expect() -> None:
    """A check that reads job records or lock samples states its rule, and a watch step gives
    the health timing check its interval."""
    locks = _expected("lock-exclusivity", LabConfig())
    assert locks["lock-exclusivity"].startswith("no overlapping runs of a job")
    health = _expected("health-contract", LabConfig())
    assert "within 1.050 s of it going down" in health["health-detailed-timing"]


def test_distribution_states_the_band_for_the_planned_answers() -> None:
    """30 req/s for 15 s: 450 answers, each share's derived band around 1/3, and the sample the
    band needs."""
    text = _expected("distribution", LabConfig())["distribution"]
    band = share_band(dict.fromkeys(("backend-1", "backend-2", "backend-3"), 1), 450)
    assert text.startswith(f"backend-1 0.3333 +/- {band.half_widths['backend-1']:.4f}"), text
    assert f"for the ~450 answers planned (30 req/s for 15 s); at least {band.required}" in text
    assert "too few" not in text


def test_explain_prints_each_checks_expectation() -> None:
    """The command shows the expectation under each check line."""
    result = CliRunner().invoke(app, ["explain", "failover"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    expects = "expects: backend-1 in rotation until max_fails=3 failures count"
    assert expects in result.output
    assert ("wait 3.36 s = ejection(min(connect_timeout 1, client_timeout 10)) 1.36 [c + "
            "max_fails * workers * interval = 1 + 3 * 1 * 0.120] + 2") in result.output
