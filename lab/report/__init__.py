"""Run results on disk (JSON) and on screen (a table).

``result.json`` (schema 1) holds the verdict, every check with its measured value, expected
value and derivation, the faults, and the full history, so a run can be re-checked later.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from rich.table import Table

from lab.checks import Verdict
from lab.scenarios.runner import RunResult

REPORT_SCHEMA_VERSION = 1
DEFAULT_REPORT_ROOT = Path(".lab") / "runs"
EXIT_PASS, EXIT_CHECK_FAILED, EXIT_LAB_FAILED = 0, 1, 2


def exit_code(results: list[RunResult]) -> int:
    """0 when every check passed; 1 when any check failed or could not decide."""
    return EXIT_PASS if all(r.verdict is Verdict.PASS for r in results) else EXIT_CHECK_FAILED


def document(result: RunResult) -> dict:
    """The JSON form of one run."""
    return {
        "schema": REPORT_SCHEMA_VERSION,
        "scenario": result.scenario,
        "description": result.description,
        "lab": result.lab,
        "seed": result.seed,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "wall_time_s": round(result.finished_at - result.started_at, 3),
        "verdict": result.verdict.value,
        "checks": [
            {"name": c.name, "verdict": c.verdict.value, "measured": c.measured, "expected": c.expected,
             "derivation": c.derivation, "details": list(c.details), "values": dict(c.values)}
            for c in result.checks
        ],
        "faults": [asdict(f) for f in result.faults],
        "durations": dict(result.durations),
        "notes": list(result.notes),
        "history": asdict(result.history),
    }


def write(result: RunResult, root: Path = DEFAULT_REPORT_ROOT) -> Path:
    """Write ``<root>/<time>-<scenario>/result.json``; returns the run's directory."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(result.started_at))
    directory = Path(root) / f"{stamp}-{result.scenario}-{result.seed}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "result.json").write_text(json.dumps(document(result), indent=1, default=str))
    return directory


_STYLE = {Verdict.PASS: "green", Verdict.FAIL: "red", Verdict.UNKNOWN: "yellow"}


def table(result: RunResult) -> Table:
    """Check, verdict, measured, expected: what a person reads at the end of a run."""
    wall = result.finished_at - result.started_at
    style = _STYLE[result.verdict]
    out = Table(title=f"{result.scenario}: [{style}]{result.verdict.value}[/] in {wall:.1f} s (seed {result.seed})",
                title_justify="left")
    for column in ("check", "verdict", "measured", "expected"):
        out.add_column(column, overflow="fold")
    for check in result.checks:
        out.add_row(check.name, f"[{_STYLE[check.verdict]}]{check.verdict.value}[/]", check.measured, check.expected)
    return out
