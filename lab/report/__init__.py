"""Run results on disk (JSON) and on screen (a table), with both verdict layers.

``result.json`` (schema 1; fields are only ever added) holds the verdict (conformance and
objectives combined), each layer's own verdict, the thresholds in force with their source,
the predictions stated before the traffic, every check with its measured value, expected value
and derivation (its conformance) and its objectives, the faults, where each part of the
expectations was read, and the full history, so a run can be re-checked later.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from lab.checks import CheckResult, Verdict
from lab.objectives import document as objectives_document
from lab.report import html
from lab.scenarios.runner import RunResult
from lab.verdict import Prediction

REPORT_SCHEMA_VERSION = 1
DEFAULT_REPORT_ROOT = Path(".lab") / "runs"
EXIT_PASS, EXIT_CHECK_FAILED, EXIT_LAB_FAILED = 0, 1, 2


def exit_code(results: list[RunResult]) -> int:
    """0 when every check and objective passed; 1 when any failed or could not decide."""
    return EXIT_PASS if all(r.verdict is Verdict.PASS for r in results) else EXIT_CHECK_FAILED


def _check(check: CheckResult) -> dict[str, Any]:
    return {"name": check.name, "label": check.shown, "verdict": check.overall.value,
            "conformance": check.verdict.value, "measured": check.measured,
            "expected": check.expected, "derivation": check.derivation,
            "details": list(check.details), "values": dict(check.values),
            "objectives": [{"name": o.name, "verdict": o.verdict.value, "threshold": o.threshold,
                            "measured": o.measured, "value": o.value, "derivation": o.derivation}
                           for o in check.objectives]}


def _prediction(prediction: Prediction) -> dict[str, Any]:
    # JSON has no infinity: a bound of "never" (an ejection that does not come) is the word.
    def bound(x: float | None) -> float | str | None:
        return "never" if x is not None and math.isinf(x) else x
    return {"objective": prediction.objective, "check": prediction.check,
            "threshold": prediction.threshold, "predicted": prediction.predicted,
            "reachable": prediction.reachable, "arithmetic": prediction.arithmetic,
            "low": bound(prediction.low), "high": bound(prediction.high),
            "held": prediction.held, "compared": prediction.compared}


def document(result: RunResult, load_run: Path | None = None) -> dict:
    """The JSON form of one run; ``load_run`` is the directory of the k6 run that drove load
    beside its steps (``lab load PROFILE --scenario``), linked from the report."""
    return {
        "schema": REPORT_SCHEMA_VERSION,
        "scenario": result.scenario,
        "description": result.description,
        "lab": result.lab,
        "lab_version": result.version,
        "seed": result.seed,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "wall_time_s": round(result.finished_at - result.started_at, 3),
        "verdict": result.verdict.value,
        "verdicts": {"conformance": result.conformance.value,
                     "objectives": result.objectives_verdict.value},
        "objectives": objectives_document(result.objectives),
        "predictions": [_prediction(p) for p in result.predictions],
        "checks": [_check(c) for c in result.checks],
        "expectations": dict(result.expectations),
        "steps": list(result.steps),
        "config": result.config,
        "faults": [f.document() for f in result.faults],
        "durations": dict(result.durations),
        "notes": list(result.notes),
        **({"load": _load_link(load_run)} if load_run is not None else {}),
        "history": asdict(result.history),
    }


def _load_link(load_run: Path) -> dict[str, Any]:
    # Relative to the scenario's directory (both sit in the same report root), so the
    # links survive the report root being copied or archived by CI.
    files = sorted(p.name for p in load_run.iterdir() if p.is_file()) if load_run.is_dir() else []
    return {"directory": f"../{load_run.name}", "files": files}


def write(result: RunResult, root: Path = DEFAULT_REPORT_ROOT,
          load_run: Path | None = None) -> Path:
    """Write ``<root>/<time>-<scenario>-<seed>/result.json``; returns the run's directory."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(result.started_at))
    directory = Path(root) / f"{stamp}-{result.scenario}-{result.seed}"
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document(result, load_run), indent=1, default=str)
    (directory / "result.json").write_text(text)
    html.write(directory)
    return directory


STYLE = {Verdict.PASS: "green", Verdict.FAIL: "red", Verdict.UNKNOWN: "yellow"}


def _verdict(verdict: Verdict) -> Text:
    return Text(verdict.value, style=STYLE[verdict])


def table(result: RunResult) -> Table:
    """Per check: its conformance (measured against the configuration it runs) and each
    objective (measured against the threshold in force), side by side."""
    wall = result.finished_at - result.started_at
    title = Text.assemble(f"{result.scenario}: ", _verdict(result.verdict),
                          f" in {wall:.1f} s (seed {result.seed}; conformance ",
                          _verdict(result.conformance), ", objectives ",
                          _verdict(result.objectives_verdict), ")")
    out = Table(title=title, title_justify="left")
    for column in ("check", "layer", "verdict", "measured", "expected"):
        out.add_column(column, overflow="fold")
    for check in result.checks:
        out.add_row(Text(check.shown), "conformance", _verdict(check.verdict), Text(check.measured),
                    Text(check.expected))
        for objective in check.objectives:
            out.add_row("", Text(f"objective {objective.name}"), _verdict(objective.verdict),
                        Text(objective.measured), Text(objective.threshold))
    return out


def prediction_lines(predictions: tuple[Prediction, ...]) -> list[Text]:
    """The predictions as lines, the objectives the configuration cannot meet first."""
    ordered = sorted(predictions, key=lambda p: {False: 0, None: 2, True: 1}[p.reachable])
    styles = {False: "bold red", True: "dim", None: "dim"}
    return [Text(p.line(), style=styles[p.reachable]) for p in ordered]


def held_lines(predictions: tuple[Prediction, ...]) -> list[Text]:
    """After the run: each prediction with a range, and whether the measurement fell in it
    (a miss means the lab's model of this configuration was wrong, not the system)."""
    return [Text(f"  prediction {'held' if p.held else 'MISSED'}: {p.objective} "
                 f"({p.check}) {p.predicted} (range {p.range_text()}): measured {p.compared}",
                 style="dim" if p.held else "bold yellow")
            for p in predictions if p.held is not None]
