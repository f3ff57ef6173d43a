"""Shared fixtures: one Docker engine, one image build and one running lab per test session.

Tests that need Docker are marked ``docker``; `pytest -m "not docker"` runs only the pure
ones. Docker tests never skip silently: without an engine they fail with the lab's message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from lab.config import LabConfig
from lab.engine import Engine
from lab.errors import LabError
from lab.topology.images import ensure_images
from lab.topology.lab import Lab, remove_orphans

# testcontainers would pull its Ryuk reaper first, which fails without a registry; the
# lab's own label-based cleanup (remove_orphans) removes what a killed test run leaves.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


def session_lab_name(suffix: str = "") -> str:
    """A lab name unique to this test process (labs of dead test runs are orphans)."""
    return f"pytest-{os.getpid()}{'-' + suffix if suffix else ''}"


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    """The Docker engine, with leftovers of earlier crashed runs removed first."""
    try:
        docker_engine = Engine.connect()
    except LabError as exc:
        pytest.fail(f"Docker tests need a Docker engine: {exc.render()}", pytrace=False)
    remove_orphans(docker_engine)
    yield docker_engine
    docker_engine.close()


@pytest.fixture(scope="session")
def lab_images(engine: Engine) -> dict[str, str]:
    """Every role's image, built once per test run (a no-op when the inputs are unchanged)."""
    refs = ensure_images(engine, LabConfig().build)
    return {role: ref.reference for role, ref in refs.items()}


@pytest.fixture(scope="session")
def running_lab(engine: Engine, lab_images: dict[str, str]) -> Iterator[Lab]:
    """A lab with the default configuration, shared by the tests that leave it as they found it."""
    lab = Lab(engine, LabConfig(name=session_lab_name()))
    try:
        lab.up(ephemeral=True)
        yield lab
    finally:
        lab.down()


# -- the negative-control gate ---------------------------------------------------------------
#
# A test marked ``covers("check:<name>", "objective:<name>")`` that takes ``negative_control``
# hands it what it judged; the gate counts the names it saw fail (a check whose combined
# verdict, conformance and objectives, is fail; an objective whose verdict is fail). At
# teardown a test that passed must have seen every name it covers fail, or it errors. An
# integration test may hand over only runs judged against what the lab really ran: a run
# judged against a claimed configuration (``Runner(claimed=...)``), or checks judged again
# (``rejudge``), shows that a broken topology fails against a configuration it does not run,
# not that a user's broken configuration fails, and is refused. A covers() marker on a test
# that does not take the fixture counts for nothing. tests/unit/test_registry.py reads what
# passed the gate in this session (``gate_record``).

CLAIMED_SOURCE = "claimed configuration"
# An attribute, not a StashKey: this file is imported both as pytest's conftest and as
# tests.conftest (by test_registry), and each import would make its own key.
_GATE = "_negative_control_gate"
_CALL = pytest.StashKey[pytest.TestReport]()


def test_kind(item: pytest.Item) -> str:
    """``unit`` or ``integration``: the folder a test lives in."""
    return "integration" if "integration" in item.path.parts else "unit"


def covered(item: pytest.Item) -> set[str]:
    """The names every covers() marker on a test (module and function) names."""
    return {name for mark in item.iter_markers("covers") for name in mark.args}


def gate_record(config: pytest.Config) -> dict[str, dict[str, set[str]]]:
    """kind -> name -> the tests that showed it failing and passed the gate, this session."""
    if not hasattr(config, _GATE):
        setattr(config, _GATE, {"unit": {}, "integration": {}})
    return getattr(config, _GATE)


class NegativeControl:
    """What one covered test observed fail, and whether it judged the running configuration."""

    def __init__(self, kind: str):
        self.kind = kind
        self.failed: set[str] = set()
        self.seen: set[str] = set()

    def observe(self, *results: object) -> None:
        """Hand over what was judged: a scenario's ``RunResult``, a ``lab run --json`` or
        ``lab load --json`` document, or (unit tests only) ``CheckResult``s."""
        from lab.checks import CheckResult
        from lab.scenarios.runner import RunResult

        for result in results:
            if isinstance(result, RunResult):
                self._running(dict(result.expectations))
                for check in result.checks:
                    self._check(check.name, check.overall.value,
                                [(o.name, o.verdict.value) for o in check.objectives])
            elif isinstance(result, CheckResult):
                if self.kind == "integration":
                    pytest.fail("negative control: an integration control hands over whole runs "
                                "(a RunResult or a result document), not checks judged again",
                                pytrace=False)
                self._check(result.name, result.overall.value,
                            [(o.name, o.verdict.value) for o in result.objectives])
            elif isinstance(result, dict) and "checks" in result:
                self._running(result.get("expectations", {}))
                for check in result["checks"]:
                    self._check(check["name"], check["verdict"],
                                [(o["name"], o["verdict"]) for o in check["objectives"]])
            elif isinstance(result, dict) and "threshold_results" in result:
                # lab load: the objectives became its thresholds (load_p95, availability).
                for threshold in result["threshold_results"]:
                    name = ("load_p95" if "duration" in threshold["metric"]
                            or "latency" in threshold["metric"] else "availability")
                    self._objective(name, "pass" if threshold["passed"] else "fail")
            elif isinstance(result, list | tuple):
                self.observe(*result)
            else:
                pytest.fail(f"negative control: cannot read a {type(result).__name__}",
                            pytrace=False)

    def observe_objective(self, name: str, verdict: object) -> None:
        """An objective's verdict the test established itself (unit tests of a judge)."""
        if self.kind == "integration":
            pytest.fail("negative control: an integration control hands over what the lab "
                        "judged, not verdicts of its own", pytrace=False)
        self._objective(name, str(getattr(verdict, "value", verdict)))

    def _running(self, sources: dict[str, str]) -> None:
        claimed = sorted(part for part, source in sources.items() if CLAIMED_SOURCE in source)
        if claimed:
            pytest.fail("negative control: judged against a claimed configuration "
                        f"({', '.join(claimed)}), not the one the lab ran: it cannot count",
                        pytrace=False)

    def _check(self, name: str, verdict: str, objectives: list[tuple[str, str]]) -> None:
        self.seen.add(f"check:{name}")
        if verdict == "fail":
            self.failed.add(f"check:{name}")
        for objective, judged in objectives:
            self._objective(objective, judged)

    def _objective(self, name: str, verdict: str) -> None:
        self.seen.add(f"objective:{name}")
        if verdict == "fail":
            self.failed.add(f"objective:{name}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Keep each test's call report: the gate counts only a test that ran and passed."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_CALL] = report


@pytest.fixture
def negative_control(request: pytest.FixtureRequest) -> Iterator[NegativeControl]:
    """The gate a negative control hands its results to (see above)."""
    item = request.node
    gate = NegativeControl(test_kind(item))
    names = covered(item)
    if not names:
        pytest.fail("negative_control: the test covers nothing (pytest.mark.covers(...))",
                    pytrace=False)
    yield gate
    report = item.stash.get(_CALL, None)
    if report is None or not report.passed:
        return      # failed or skipped: it showed nothing
    missing = sorted(names - gate.failed)
    if missing:
        pytest.fail(f"negative control {item.name}: covers {', '.join(missing)} but never saw "
                    f"{'it' if len(missing) == 1 else 'them'} fail (saw fail: "
                    f"{', '.join(sorted(gate.failed)) or 'nothing'})", pytrace=False)
    record = gate_record(request.config)[gate.kind]
    for name in names:
        record.setdefault(name, set()).add(item.nodeid)


AUDIT = "test_every_check_and_objective_passed_the_negative_control_gate"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark Docker tests; run the gate's audit after every control it audits."""
    for item in items:
        if "engine" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.docker)
    audits = [item for item in items if item.name == AUDIT]
    for item in audits:
        items.remove(item)
        items.append(item)
