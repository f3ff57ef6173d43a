"""run_check is every check's one crash guard: a judge or an objective that raises gives
unknown with the error, never a pass and never an aborted run."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from test_objective_judges import expectations

from lab.checks import CHECKS, CheckContext, Observation, run_check
from lab.checks.registry import CheckDef
from lab.history import FaultEvent, FaultPhase, History, RequestRecord
from lab.objectives import Objectives
from lab.verdict import Verdict

# A value for each required parameter any check takes (a node, a location, a bound).
REQUIRED = {"target": "backend-1", "client": "reads", "within": 5.0, "location": "/api/"}


def _params(definition: CheckDef[Any]) -> Any:
    given = {name: REQUIRED[name] for name, field in definition.params.model_fields.items()
             if field.is_required()}
    return definition.params(**given)


def _garbage() -> History:
    """A history whose every record list holds a None where a record should be, one real fault
    event and one request of nothing but its client (run_check narrows a check of one client's
    requests before the judge runs), so every judge reaches records it cannot read."""
    history = History(**{f.name: [None] for f in dataclasses.fields(History)})
    history.faults[:] = [FaultEvent("kill", "backend-1", FaultPhase.INJECT, 1.0, 0.9)]
    history.requests[:] = [RequestRecord(*(None, "reads"), *[None] * 8)]  # type: ignore[arg-type]
    return history


@pytest.mark.parametrize("definition", list(CHECKS), ids=lambda d: d.name)
def test_a_check_that_crashes_is_unknown(definition: CheckDef[Any]) -> None:
    """Judged on records it cannot read, a check is unknown (or judged nothing), never a pass,
    and run_check returns instead of raising."""
    ctx = CheckContext(history=_garbage(), expectations=expectations(),
                       observations={kind: None for kind in Observation})
    result = run_check(definition, _params(definition), ctx, Objectives())
    assert result.name == definition.name
    assert result.verdict is not Verdict.PASS, result
    assert all(o.verdict is not Verdict.PASS for o in result.objectives), result.objectives


def test_the_guard_names_the_error() -> None:
    """A crashed check says so, with the exception, under its registered name and label."""
    definition = CHECKS.get("ejection")
    ctx = CheckContext(history=_garbage(), expectations=expectations())
    result = run_check(definition, _params(definition), ctx, Objectives())
    assert result.verdict is Verdict.UNKNOWN and result.measured == "check crashed"
    assert result.derivation.startswith(("AttributeError", "TypeError"))
    assert result.label == "ejection backend-1"

