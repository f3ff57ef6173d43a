"""The runs in a report directory: one folder per run, each with its ``result.json``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError
from lab.report.stored import RESULT_FILE, RunSummary, load_summary


@dataclass(frozen=True)
class ListedRun:
    """One run folder and the top of its result (None, with the reason, when unreadable)."""

    directory: Path
    summary: RunSummary | None
    problem: str = ""


def run_directories(root: Path) -> list[Path]:
    """Every run folder under ``root``, oldest first (by when its result.json was written)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p.parent for p in root.glob(f"*/{RESULT_FILE}")]
    return sorted(found, key=lambda d: ((d / RESULT_FILE).stat().st_mtime, d.name))


def kind_of(directory: Path) -> str:
    """``scenario`` or ``load`` (a ``lab load`` run, whose report is k6's own)."""
    try:
        return load_summary(directory).kind
    except LabError:
        return "scenario"    # unreadable: the caller reports why when it reads it


def newest(root: Path) -> Path:
    """The folder of the scenario run written last under ``root`` (a load run has no
    report.html of the lab's to render: k6's dashboard.html is its report)."""
    every = run_directories(root)
    # Newest first, reading results only until a scenario run turns up (each is megabytes).
    newest_scenario = next((d for d in reversed(every) if kind_of(d) != "load"), None)
    if newest_scenario is None:
        only = " (only `lab load` runs, whose report is k6's dashboard.html)" if every else ""
        raise LabError(f"no runs in {root}{only}", hint="`lab run NAME` writes one; or name "
                       "a run directory, or another --report-dir")
    return newest_scenario


def list_runs(root: Path) -> list[ListedRun]:
    """Every run under ``root``, oldest first; unreadable ones say why."""
    listed = []
    for directory in run_directories(root):
        try:
            listed.append(ListedRun(directory, load_summary(directory)))
        except LabError as error:
            listed.append(ListedRun(directory, None, error.render()))
    return listed
