"""The pytest plugin (entry point pytest11 ``failover_lab``) in a user's own test suite, run by
pytester in a pytest subprocess on a real lab: a five-line test file passes, a run that does
not pass fails with the checks table, and a lab the plugin started is gone afterwards."""

from __future__ import annotations

import pytest

from lab.engine import LABEL_LAB, Engine
from lab.pytest_plugin import NAME_ENV
from lab.scenarios.loader import available
from lab.topology.lab import Lab
from tests.conftest import session_lab_name

pytest_plugins = ("pytester",)

USER_TEST = """
def test_failover(run_scenario):
    result = run_scenario("failover", seed=41)
    assert result.verdict.value == "pass"
    assert {"ejection", "readmission"} <= {check.name for check in result.checks}
"""

NOT_PASSING = """
from pathlib import Path

def test_too_few_requests(run_scenario):
    run_scenario(Path(__file__).with_name("too-few.yaml"), seed=42)

def test_unknown_override(run_scenario):
    run_scenario("failover", sede=1)
"""


def test_a_users_test_file_runs_on_the_named_lab(pytester: pytest.Pytester,
                                                 running_lab: Lab) -> None:
    """Five lines of a user's test_failover.py pass on a named running lab, which stays up."""
    pytester.makepyfile(test_failover=USER_TEST)
    result = pytester.runpytest_subprocess("--lab-name", running_lab.name, "-p", "no:cacheprovider",
                                           timeout=300)
    result.assert_outcomes(passed=1)
    assert list(pytester.path.glob(".lab/runs/*-failover-41/report.html"))
    assert running_lab.inspect("nginx").status == "running"


def test_a_run_that_does_not_pass_fails_with_the_checks_table(pytester: pytest.Pytester,
                                                              running_lab: Lab) -> None:
    """An undecidable run fails its test with the table and the report's path; an override
    the Runner does not take fails with the accepted ones named."""
    text = available()["distribution"].read_text()
    (pytester.path / "too-few.yaml").write_text(
        text.replace("name: distribution", "name: too-few")
        .replace("- distribution: {client: reads}",
                 "- distribution: {client: reads, min_requests: 100000}"))
    pytester.makepyfile(test_not_passing=NOT_PASSING)
    result = pytester.runpytest_subprocess("--lab-name", running_lab.name, "-p", "no:cacheprovider",
                                           timeout=300)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*too-few: unknown*", "*distribution*conformance*unknown*",
                                 "*report: *too-few-42/report.html*",
                                 "*unknown override(s) sede (accepted: *seed*"])


def test_the_plugin_removes_the_lab_it_started(pytester: pytest.Pytester, engine: Engine,
                                               lab_images: dict[str, str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """No lab of the name runs: the plugin starts one, and removes it although the test failed."""
    name = session_lab_name("plugin-own")
    monkeypatch.setenv(NAME_ENV, name)
    pytester.makepyfile(test_own_lab=f"""
def test_uses_the_lab(lab):
    assert lab.name == "{name}"
    assert lab.inspect("nginx").status == "running"
    raise AssertionError("the lab goes even when the test fails")
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the lab goes even when the test fails*"])
    assert not engine.list_containers({LABEL_LAB: name})
    assert name not in engine.lab_names()
