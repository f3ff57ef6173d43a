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


def test_every_check_and_objective_has_a_unit_test_and_a_negative_control() -> None:
    """A check or objective nobody showed failing against a broken topology is a defect."""
    covers = _covers()
    wanted = ({f"check:{name}" for name in CHECKS.names()}
              | {f"objective:{n}" for n in OBJECTIVE_NAMES})
    assert not wanted - covers["unit"], f"no unit test covers {sorted(wanted - covers['unit'])}"
    assert not wanted - covers["integration"], \
        f"no negative control covers {sorted(wanted - covers['integration'])}"
    stray = (covers["unit"] | covers["integration"]) - wanted
    assert not stray, f"covers() names nothing registered: {sorted(stray)}"
