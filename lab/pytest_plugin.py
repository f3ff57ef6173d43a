"""A pytest plugin: lab scenarios as tests in a suite you already run.

Installed with the lab (entry point ``pytest11``, plugin name ``failover_lab``)::

    # test_failover.py
    def test_failover(run_scenario):
        result = run_scenario("failover")
        assert result.seed is not None  # the fixture already failed the test unless it passed

Fixtures:

- ``lab`` (session): the lab the scenarios run on. With ``--lab-name NAME`` (or
  ``FAILOVER_LAB_NAME``) it attaches to that running lab and leaves it running; when no lab of
  that name runs, or no name is given (then ``pytest-lab-<pid>``), it starts one and removes it
  at the end of the session, whatever happened.
- ``run_scenario(name_or_path, **overrides)``: runs a shipped scenario or a .yaml file on that
  lab, writes ``result.json`` and ``report.html`` under ``--lab-report-dir`` (default
  ``.lab/runs``), and returns the typed ``RunResult``; when the verdict is not ``pass`` it
  fails the test with the checks table and the report's path. ``overrides`` go to the Runner
  (``seed=7``, ``claimed=...``); ``objectives={"ejection": "10s"}`` sets objectives for this
  run, over the ``[objectives]`` of ``--lab-config`` (default ./lab.toml). A scenario whose
  ``lab:`` section asks for another configuration gets a lab of its own for its run.

Errors of the lab (a typo in a scenario name, no Docker engine) fail the test with the lab's
message, never a traceback.
"""

from __future__ import annotations

import inspect
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # the lab is imported when a fixture is used, not when pytest starts
    from lab.config import LabConfig
    from lab.scenarios.runner import RunResult
    from lab.topology.lab import Lab

NAME_ENV = "FAILOVER_LAB_NAME"
# Runner parameters the fixture sets itself.
_OWN = frozenset({"self", "lab", "scenario", "objectives", "objective_overrides"})


def pytest_addoption(parser: pytest.Parser) -> None:
    """The plugin's command-line options."""
    group = parser.getgroup("failover-lab",
                            "Failover Lab scenarios (the lab and run_scenario fixtures)")
    group.addoption("--lab-name", default=None,
                    help=f"Attach to the running lab of this name (else start it); env {NAME_ENV}.")
    group.addoption("--lab-config", default=None, type=Path,
                    help="The lab.toml for the lab started and the objectives "
                         "(default ./lab.toml).")
    group.addoption("--lab-report-dir", default=None, type=Path,
                    help="Where each run's result.json and report.html go (default .lab/runs).")


def _lab_errors_fail(action: Callable[[], Any]) -> Any:
    from lab.errors import LabError

    try:
        return action()
    except LabError as error:
        pytest.fail(f"{type(error).__name__}: {error.render()}", pytrace=False)


class _Session:
    """The labs this session uses: the one attached or started, and the ones it started."""

    def __init__(self, config: pytest.Config):
        from lab.config import load_config
        from lab.engine import Engine

        self.config_path: Path | None = config.getoption("--lab-config")
        self.report_dir: Path | None = config.getoption("--lab-report-dir")
        name = (config.getoption("--lab-name") or os.environ.get(NAME_ENV)
                or f"pytest-lab-{os.getpid()}")
        self.base: LabConfig = load_config(self.config_path, name=name)
        self.engine = Engine.connect()
        self.started: list[Lab] = []

    def start(self, config: LabConfig) -> Lab:
        from lab.topology.lab import Lab

        lab = Lab(self.engine, config)
        self.started.append(lab)  # before up(): a half-started lab is removed too
        lab.up(ephemeral=True)
        return lab

    def attach_or_start(self) -> Lab:
        from lab.errors import LabNotFound
        from lab.topology.lab import Lab

        try:
            return Lab.attach(self.engine, self.base.name)
        except LabNotFound:
            return self.start(self.base)

    def close(self) -> None:
        try:
            for lab in reversed(self.started):
                lab.down()
        finally:
            self.engine.close()


@pytest.fixture(scope="session")
def _failover_lab_session(pytestconfig: pytest.Config) -> Iterator[_Session]:
    session = _lab_errors_fail(lambda: _Session(pytestconfig))
    try:
        yield session
    finally:
        session.close()


@pytest.fixture(scope="session")
def lab(_failover_lab_session: _Session) -> Lab:
    """The lab the scenarios run on: attached by name, or started (and removed afterwards)."""
    return _lab_errors_fail(_failover_lab_session.attach_or_start)


def _runner_arguments(overrides: dict[str, Any], config_path: Path | None) -> dict[str, Any]:
    """Keyword arguments for the Runner: the overrides it accepts, the objectives in force."""
    from lab.scenarios.runner import Runner

    accepted = inspect.signature(Runner).parameters
    unknown = sorted(set(overrides) - (set(accepted) - _OWN) - {"objectives"})
    if unknown:
        allowed = ", ".join(sorted(set(accepted) - _OWN | {"objectives"}))
        pytest.fail(f"run_scenario: unknown override(s) {', '.join(unknown)} (accepted: {allowed})",
                    pytrace=False)
    arguments = {k: v for k, v in overrides.items() if k != "objectives"}
    given = overrides.get("objectives")
    if "objectives" in accepted:
        from lab.objectives import load_objectives

        arguments["objectives"] = _lab_errors_fail(lambda: load_objectives(config_path))
        if isinstance(given, dict) and "objective_overrides" in accepted:
            arguments["objective_overrides"] = given
        elif given is not None:
            arguments["objectives"] = given
    elif given is not None:
        pytest.fail("run_scenario: this lab's Runner judges no objectives (objectives= given)",
                    pytrace=False)
    return arguments


def failure_text(result: RunResult, directory: Path) -> str:
    """The checks table and every check that did not pass, as plain text."""
    from rich.console import Console

    from lab import report
    from lab.checks import Verdict

    buffer = io.StringIO()
    Console(file=buffer, width=120, color_system=None, highlight=False).print(report.table(result))
    lines = [buffer.getvalue().rstrip()]
    for check in result.checks:
        if check.verdict is not Verdict.PASS:
            lines.append(f"{check.shown}: {check.verdict.value}: {check.measured} (expected "
                         f"{check.expected}; {check.derivation})")
        for objective in check.objectives:
            if objective.verdict is not Verdict.PASS:
                lines.append(f"{check.shown}: objective {objective.name}: "
                             f"{objective.verdict.value}: {objective.measured} (threshold "
                             f"{objective.threshold}; {objective.derivation})")
    lines.append(f"report: {directory / 'report.html'}")
    return "\n".join(lines)


@pytest.fixture
def run_scenario(lab: Lab, _failover_lab_session: _Session) -> Callable[..., RunResult]:
    """``run_scenario(name_or_path, **overrides)``: run a scenario on the lab; fail unless it
    passes."""
    from lab import report
    from lab.checks import Verdict
    from lab.scenarios.loader import check_nodes, load_scenario, resolve
    from lab.scenarios.runner import Runner

    session = _failover_lab_session

    def run(name_or_path: str | Path, **overrides: Any) -> RunResult:
        scenario = _lab_errors_fail(lambda: load_scenario(str(name_or_path)))
        config = lab.config
        for section, values in scenario.lab.items():
            config = config.with_overrides(section, **values)
        _lab_errors_fail(lambda: check_nodes(scenario, config, str(resolve(str(name_or_path)))))
        arguments = _runner_arguments(overrides, session.config_path)
        target = lab
        if config != lab.config:  # the scenario asks for another configuration
            target = _lab_errors_fail(
                lambda: session.start(config.with_name(f"{config.name}-{scenario.name}")))
        try:
            result = _lab_errors_fail(lambda: Runner(target, scenario, **arguments).run())
        finally:
            if target is not lab:
                session.started.remove(target)
                target.down()
        directory = report.write(result, session.report_dir or report.DEFAULT_REPORT_ROOT)
        if result.verdict is not Verdict.PASS:
            pytest.fail(failure_text(result, directory), pytrace=False)
        return result

    return run
