"""The registries: one name per entry, strict parameters, no silent fallthrough; and every check
and objective the lab ships has a unit test and a negative control that shows it failing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from lab.checks import CHECKS
from lab.errors import ConfigError
from lab.faults import FAULTS
from lab.objectives import OBJECTIVE_NAMES
from lab.registry import Registry, strict_model
from lab.scenarios.probes import PROBES
from lab.scenarios.steps import STEPS
from tests.conftest import gate_record

pytestmark = pytest.mark.covers()

TESTS = Path(__file__).resolve().parents[1]


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str


def test_a_name_is_registered_once() -> None:
    """A second entry under a taken name is refused at registration, not at run time."""
    registry: Registry[_Entry] = Registry("widget")
    registry.add(_Entry(name="one"))
    with pytest.raises(TypeError, match="registered twice"):
        registry.add(_Entry(name="one"))


def test_an_unknown_name_is_an_error_naming_the_known_ones() -> None:
    """No default, no fallthrough: the message lists every name and the nearest."""
    with pytest.raises(ConfigError) as error:
        CHECKS.get("ejecton")
    message = error.value.render()
    assert "unknown check 'ejecton'" in message and "did you mean 'ejection'?" in message
    assert all(name in message for name in CHECKS.names())
    for registry, wrong in ((FAULTS, "kil"), (STEPS, "wiat"), (PROBES, "pol")):
        with pytest.raises(ConfigError, match="did you mean"):
            registry.get(wrong)


def test_a_parameter_model_that_accepts_unknown_keys_is_refused() -> None:
    """A model that would ignore a misspelt parameter cannot be registered."""

    class Lax(BaseModel):
        model_config = ConfigDict(frozen=True)

    with pytest.raises(TypeError, match="forbid extra keys"):
        strict_model(Lax, "check lax")


def test_every_entry_refuses_unknown_parameters() -> None:
    """Checks, faults and steps all validate with models that forbid extra keys."""
    for check in CHECKS:
        assert check.params.model_config.get("extra") == "forbid", check.name
        assert check.summary, check.name
    for fault in FAULTS:
        assert fault.params.model_config.get("extra") == "forbid", fault.name
    for step in STEPS:
        assert step.model.model_config.get("extra") == "forbid", step.name


def _covers() -> dict[str, set[str]]:
    """Names in ``pytest.mark.covers(...)`` by test directory (unit, integration)."""
    found: dict[str, set[str]] = {"unit": set(), "integration": set()}
    for path in TESTS.rglob("test_*.py"):
        kind = path.parent.name
        if kind not in found:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "covers"):
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        found[kind].add(arg.value)
                    elif isinstance(arg, ast.Starred):
                        found[kind] |= _starred_names(arg)
    return found


def _starred_names(arg: ast.Starred) -> set[str]:
    # covers(*(f"objective:{name}" for name in ("a", "b"))): the literal names inside.
    names: set[str] = set()
    for node in ast.walk(arg):
        if isinstance(node, ast.Tuple):
            names |= {f"objective:{e.value}" for e in node.elts
                      if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return names


def _wanted() -> set[str]:
    return ({f"check:{name}" for name in CHECKS.names()}
            | {f"objective:{n}" for n in OBJECTIVE_NAMES})


def test_covers_names_only_registered_checks_and_objectives() -> None:
    """A covers() name that matches nothing registered is a typo or a leftover."""
    covers = _covers()
    stray = (covers["unit"] | covers["integration"]) - _wanted()
    assert not stray, f"covers() names nothing registered: {sorted(stray)}"


def _gated_tests(kind: str) -> set[tuple[str, str]]:
    """(file, test) of every test in tests/<kind> that hands results to the gate."""
    found = set()
    for path in (TESTS / kind).glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
                    and any(a.arg == "negative_control" for a in node.args.args)):
                found.add((path.name, node.name))
    return found


def _demanded(session: pytest.Session) -> list[str]:
    """The kinds this session ran every gated test of: only a whole run can be audited (a
    `-k` or single-file run would miss controls it never selected)."""
    selected = {(item.path.name, getattr(item, "originalname", item.name))
                for item in session.items if "negative_control" in item.fixturenames}
    return [kind for kind in ("unit", "integration")
            if (gated := _gated_tests(kind)) and gated <= selected]


# Checks that no configuration the lab can run shows failing: what they judge is fixed by the
# software, not by a setting, and no objective attaches to them. Their integration control
# judges a claim (its docstring says so); a unit control still shows them failing.
CLAIM_ONLY = {
    "check:lock-after-store-restart": "a Redis restart loses the lock exactly when persistence "
    "is off, which is what the running configuration predicts; only a claimed persistence "
    "setting differs from it (docs/objectives.md: duplicate_job_runs does not attach here)",
    "check:lock-after-eviction": "an evicted lock lets the next tick's node in exactly as the "
    "reference backend's code says (it runs on after losing its lease, the others try every "
    "tick); no setting changes that, and locking off leaves no lock to evict (unknown); the "
    "unit control shows it failing where no second run followed an eviction of the lock",
    "check:routing": "it judges NGINX against the configuration NGINX runs, and has no "
    "objective: a real NGINX follows its own configuration, so only an NGINX one step off it "
    "shows the check failing, which the simulator does (tests/unit/test_power.py, "
    "test_negative_controls.py)",
}


def test_every_check_and_objective_passed_the_negative_control_gate(
        request: pytest.FixtureRequest) -> None:
    """Every check and objective was shown failing, in this session, by a unit test on a
    synthetic history and (when the integration tests ran) by an integration control that ran
    the user's broken configuration as it is, each through the negative-control gate
    (tests/conftest.py): a covers() marker alone, a skipped test, or a run judged against a
    claimed configuration counts for nothing."""
    demanded = _demanded(request.session)
    if not demanded:
        pytest.skip("a partial run: the gate is audited when all unit (or all integration) "
                    "controls run")
    record = gate_record(request.config)
    problems = []
    for kind in demanded:
        exempt = set(CLAIM_ONLY) if kind == "integration" else set()
        missing = sorted(_wanted() - exempt - set(record[kind]))
        if missing:
            problems.append(f"no {kind} test showed these failing through the gate: "
                            f"{', '.join(missing)}")
    assert not problems, "\n".join(problems)
