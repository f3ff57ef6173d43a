"""A run read back from its ``result.json``: typed, for the HTML report, JUnit and ``lab runs``.

The document is schema 1, whose fields are only ever added; so reading ignores fields it
does not know and treats the later additions (``verdicts``, ``objectives``, ``predictions``,
``steps``, ``config``, ``lab_version``; per check ``conformance``, ``label`` and
``objectives``) as optional. The history is rebuilt as the same typed records the run
recorded (lab.history), so the report reads what the checks read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lab.checks import Verdict
from lab.errors import LabError
from lab.history import History

RESULT_FILE = "result.json"


class _Stored(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class CheckObjective(_Stored):
    """One objective judged on a check's measurement (a tolerance, not the model)."""

    name: str
    verdict: Verdict
    threshold: str = ""
    measured: str = ""
    value: Any = None
    derivation: str = ""


class StoredCheck(_Stored):
    """One check as the run judged it."""

    name: str
    verdict: Verdict                  # combined: the conformance verdict and the objectives'
    measured: str = ""
    expected: str = ""
    derivation: str = ""
    details: tuple[str, ...] = ()
    values: dict[str, Any] = Field(default_factory=dict)
    conformance: Verdict | None = None  # the configuration-derived verdict (newer documents)
    label: str | None = None
    objectives: tuple[CheckObjective, ...] = ()

    @property
    def display(self) -> str:
        """The name a person reads (``rate-limit /api/auth/``), else the check's name."""
        return self.label or self.name

    def value(self, key: str) -> float | None:
        """A numeric value the check recorded, or None."""
        number = self.values.get(key)
        return float(number) if isinstance(number, int | float) else None


class ObjectiveInForce(_Stored):
    """A threshold the run was judged against, and where it came from."""

    name: str
    threshold: str = ""
    unit: str = ""
    source: str = ""
    reason: str = ""
    description: str = ""


class Prediction(_Stored):
    """What the configuration predicts for an objective, before the run measured it."""

    objective: str
    check: str = ""
    threshold: str = ""
    predicted: str = ""
    reachable: bool | None = None
    arithmetic: str = ""
    # The range the measurement had to fall in ("never" for an infinite bound), and whether it
    # did (None: not compared); absent from results written before they existed.
    low: float | str | None = None
    high: float | str | None = None
    held: bool | None = None
    compared: str = ""


class RunSummary(_Stored):
    """The top of a result: enough to list a run (``lab runs``).

    A ``lab load`` run (``kind: "load"``) shares the report directory; it has a profile where a
    scenario run has a scenario, and no seed (k6 schedules its own arrivals), so it is listed
    as ``load <profile>``."""

    schema_: int = Field(alias="schema")
    kind: str = "scenario"
    scenario: str
    description: str = ""
    lab: str = ""
    seed: int | None
    started_at: float
    finished_at: float
    wall_time_s: float | None = None
    verdict: Verdict
    verdicts: dict[str, Verdict] = Field(default_factory=dict)
    lab_version: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _load_run(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") == "load" and "scenario" not in data:
            return {**data, "scenario": f"load {data.get('profile', '?')}", "seed": None}
        return data

    @property
    def wall_s(self) -> float:
        if self.wall_time_s is not None:
            return self.wall_time_s
        return self.finished_at - self.started_at


class StoredVerdicts(RunSummary):
    """A run's checks and objectives, without its history (what JUnit reports)."""

    checks: tuple[StoredCheck, ...] = ()
    objectives: tuple[ObjectiveInForce, ...] = ()
    predictions: tuple[Prediction, ...] = ()

    def predictions_for(self, check: str) -> list[Prediction]:
        """The predictions made for one check's objectives."""
        return [p for p in self.predictions if p.check == check]


class LoadLink(_Stored):
    """The k6 run that drove load beside a scenario's steps: its directory, relative to the
    scenario's, and the files k6 left there."""

    directory: str
    files: tuple[str, ...] = ()


class StoredRun(StoredVerdicts):
    """A whole run: its checks, what it was judged against, and its history."""

    steps: tuple[str, ...] = ()
    config: dict[str, Any] | None = None
    faults: tuple[dict[str, Any], ...] = ()
    durations: dict[str, float] = Field(default_factory=dict)
    notes: tuple[str, ...] = ()
    load: LoadLink | None = None
    history: History = Field(default_factory=History)


def _read(path: Path) -> dict[str, Any]:
    if path.is_dir():
        path = path / RESULT_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LabError(f"{path}: no such file", hint="a run directory holds result.json") from None
    except (OSError, ValueError) as exc:
        raise LabError(f"{path}: not a readable result ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != 1:
        raise LabError(f"{path}: not a lab result of schema 1")
    return data


def _validate(model: type[RunSummary], data: dict[str, Any], source: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise LabError(f"{source}: {where}: {first['msg']}") from None


def from_document(document: dict[str, Any], source: str = "result") -> StoredRun:
    """A run from its JSON document (``lab.report.document(result)``)."""
    return _validate(StoredRun, document, source)


def load(path: Path) -> StoredRun:
    """The run in ``path`` (a run directory or its result.json)."""
    return _validate(StoredRun, _read(Path(path)), str(path))


def load_summary(path: Path) -> RunSummary:
    """The top of the run in ``path``, without rebuilding its history."""
    return _validate(RunSummary, _read(Path(path)), str(path))


def load_verdicts(path: Path) -> StoredVerdicts:
    """The checks and objectives of the run in ``path``, without rebuilding its history."""
    return _validate(StoredVerdicts, _read(Path(path)), str(path))
