"""Scenario files: validation errors name the file, the line and the field; durations evaluate."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.config import LabConfig, load_config
from lab.errors import ConfigError
from lab.expectations import (
    DURATION_FUNCTIONS,
    DURATION_NAMES,
    check_duration,
    evaluate_duration,
)
from lab.scenarios.loader import available, check_nodes, load_scenario, parse_scenario
from lab.scenarios.steps import newly_taken

VALID = """\
name: t
description: d
traffic:
  - {client: reads, rate: 10}
steps:
  - wait: 1
  - inject: {fault: kill, target: backend-1}
  - heal: {fault: kill, target: backend-1}
checks:
  - availability
  - ejection: {target: backend-1}
"""


def test_every_shipped_scenario_is_valid_for_the_default_topology() -> None:
    """Each file in scenarios/ parses and names only nodes of the default lab."""
    assert {"failover", "failover-freeze", "graceful-restart", "distribution",
            "network-throttle"} <= set(available())
    for name, path in available().items():
        scenario = load_scenario(name)
        check_nodes(scenario, LabConfig(), str(path))
        assert scenario.name == name


def test_valid_scenario_parses() -> None:
    """A small valid scenario gives typed steps and checks."""
    scenario = parse_scenario(VALID, "t.yaml")
    assert [type(s).__name__ for s in scenario.steps] == ["WaitStep", "InjectStep", "HealStep"]
    assert [c.check for c in scenario.checks] == ["availability", "ejection"]


@pytest.mark.parametrize(("text", "fragment"), [
    (VALID.replace("fault: kill, target: backend-1}\n  - heal",
                   "fault: nuke, target: backend-1}\n  - heal"),
     "t.yaml:7: steps.1.inject: unknown fault 'nuke'"),
    (VALID.replace("  - wait: 1", "  - sleep: 1"),
     "t.yaml:6: steps.0: each step is a mapping with one key"),
    (VALID.replace("  - wait: 1", "  - wait: fail_timeot + 1"),
     "t.yaml:6: steps.0.wait: unknown name 'fail_timeot'"),
    (VALID.replace("  - availability", "  - availabilty"),
     "t.yaml:10: checks.0: unknown check 'availabilty'"),
    (VALID.replace("rate: 10", "rate: -1"),
     "t.yaml:4: traffic.0.rate: Input should be greater than 0"),
    (VALID.replace("  - ejection: {target: backend-1}", "  - ejection: {}"),
     "t.yaml:11: checks.1.ejection.target: Field required"),
    (VALID.replace("{target: backend-1}\n", "{target: backend-1, slo: 0.5}\n"),
     ("t.yaml:11: checks.1.ejection.slo: unknown parameter 'slo' "
      "(check ejection takes target)")),
    (VALID.replace("fault: kill, target: backend-1}\n  - heal",
                   "fault: kill, target: backend-1, percent: 5}\n  - heal"),
     ("t.yaml:7: steps.1.inject.kill.percent: unknown parameter 'percent' "
      "(fault kill takes target)")),
    (VALID.replace("  - wait: 1", "  - inject: {fault: loss, target: backend-1}"),
     "t.yaml:6: steps.0.inject.loss.percent: Field required"),
    (VALID.replace("  - wait: 1", "  - probe: pools"),
     "t.yaml:6: steps.0.probe: unknown probe 'pools'"),
    (VALID.replace("  - wait: 1", "  - probe: health:sick"),
     "probe health takes one of healthy, redis-down, database-down"),
    (VALID + "objectives:\n  ejection: 5 parsecs\n",
     "t.yaml:13: objectives.ejection: unknown unit 'parsecs'"),
    (VALID + "objectives:\n  speed: 1\n", "t.yaml:13: objectives.speed: unknown objective 'speed'"),
    ("name: t\ndescription: [unclosed\n", "t.yaml:3: not valid YAML"),
])
def test_malformed_scenario_names_line_and_field(text: str, fragment: str) -> None:
    """Each kind of mistake is reported with the file, the line and what is wrong."""
    with pytest.raises(ConfigError) as error:
        parse_scenario(text, "t.yaml")
    assert fragment in error.value.render()


def test_unknown_node_is_named() -> None:
    """A target the topology does not have is rejected before anything starts."""
    scenario = parse_scenario(VALID.replace("target: backend-1}\n  - heal",
                                            "target: backend-9}\n  - heal"), "t.yaml")
    with pytest.raises(ConfigError, match="unknown node 'backend-9'"):
        check_nodes(scenario, LabConfig(), "t.yaml")


def test_watch_step_parses_and_names_its_node() -> None:
    """A watch step takes a node, an interval and its longest duration
    (``for``); its node is checked."""
    text = VALID.replace("  - wait: 1",
                         "  - watch: {node: backend-2, interval_s: 0.1, for: \"drain + 5\"}")
    watch = parse_scenario(text, "t.yaml").steps[0].watch  # type: ignore[union-attr]
    assert (watch.node, watch.interval_s, watch.max_duration) == ("backend-2", 0.1, "drain + 5")
    with pytest.raises(ConfigError, match="steps.0.watch.node: unknown node 'backend-9'"):
        check_nodes(parse_scenario(text.replace("backend-2", "backend-9"), "t.yaml"), LabConfig(),
                    "t.yaml")
    with pytest.raises(ConfigError, match="interval_s"):
        parse_scenario(text.replace("interval_s: 0.1", "interval_s: 0"), "t.yaml")


def test_unknown_scenario_lists_the_shipped_ones() -> None:
    """Asking for a scenario that does not exist says which ones do."""
    with pytest.raises(ConfigError) as error:
        load_scenario("no-such-scenario")
    assert "no scenario named 'no-such-scenario'" in error.value.render()
    assert "failover" in error.value.render()


def test_duration_expressions_use_configuration_names() -> None:
    """Durations are numbers or arithmetic over the configuration's names, nothing else."""
    names = {"fail_timeout": 10.0, "interval": 0.15, "max_fails": 3.0}
    assert evaluate_duration("fail_timeout + max_fails * interval", names) == pytest.approx(10.45)
    assert evaluate_duration(2, names) == 2.0
    with pytest.raises(ValueError, match="not a duration expression"):
        evaluate_duration("__import__('os')", names)


def test_a_job_the_backend_does_not_run_is_named() -> None:
    """``holder:<job>`` and ``wait_until_acquired`` name jobs of this lab's backend (the
    reference's, or a contract's own), checked with the nodes before anything starts."""
    text = VALID.replace("  - wait: 1", "  - wait_until_acquired: {job: send-reminders}").replace(
        "target: backend-1}\n  - heal", "target: \"holder:send-reminders\"}\n  - heal")
    scenario = parse_scenario(text, "t.yaml")
    with pytest.raises(ConfigError) as error:
        check_nodes(scenario, LabConfig(), "t.yaml")
    rendered = error.value.render()
    assert "t.yaml: steps.1.inject.target: unknown job 'send-reminders'" in rendered
    assert "t.yaml: steps.0.wait_until_acquired.job: unknown job 'send-reminders'" in rendered
    assert "recurring-messages" in rendered
    own = Path(__file__).resolve().parents[2] / "examples" / "checklist" / "lab.toml"
    config = load_config(own)
    contract = config.backend.contract.model_copy(update={"jobs": ("send-reminders",)})
    check_nodes(scenario, config.with_overrides("backend", contract=contract), "t.yaml")


@pytest.mark.parametrize(("seen", "new"), [
    # Tokens: a token the first answer did not show is a new run, whoever holds it.
    ([("backend-1", 4), ("backend-1", 4)], False),
    ([("backend-1", 4), ("backend-2", 5)], True),
    ([(None, None), ("backend-1", 5)], True),
    ([("backend-1", 4), (None, None)], False),
    # No token (a contract's holder pattern names none): taken after free, or by another node.
    ([("backend-1", None), ("backend-1", None)], False),
    ([("backend-1", None), (None, None), ("backend-1", None)], True),
    ([("backend-1", None), ("backend-2", None)], True),
    ([(None, None)], False),
])
def test_a_lock_is_newly_taken_by_token_or_by_edge(seen: list, new: bool) -> None:
    """wait_until_acquired's test: a run begun since the step began, with or without tokens
    (before, a backend whose lock names no token was never seen taking it)."""
    assert newly_taken(seen) is new


def test_every_duration_name_and_function_is_documented() -> None:
    """The reference explains duration expressions from check_duration's docstring: every name
    and call a scenario may use is in it."""
    doc = check_duration.__doc__ or ""
    assert [n for n in (*DURATION_NAMES, *DURATION_FUNCTIONS) if f"``{n}" not in doc] == []
