"""``report.html``: one self-contained page per run, drawn from its ``result.json``.

At the top the run's timeline (``lab.report.timeline``: the requests, the faults shaded from
inject to heal, a marker at each moment a check measured, and the lock, pool and health
panels). Below: the checks and objectives with what was measured, expected and why, the
predictions, the exact request counts and percentiles, and what the run was.

The page is Jinja2 templates (``lab/report/templates``, autoescaped) around the timeline's
SVG, with its CSS inline: no script, no font, nothing fetched (the lab runs offline). Counts
and percentiles are always computed from every request, however the timeline draws them.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from lab.history import History, Outcome, RequestRecord
from lab.report.stored import (
    RESULT_FILE,
    CheckObjective,
    Prediction,
    StoredCheck,
    StoredRun,
    load,
)
from lab.report.svg import seconds_text
from lab.report.timeline import timeline
from lab.stats import nearest_rank as percentile

REPORT_FILE = "report.html"
TEMPLATE = "report.html.j2"
# The k6 files a person opens, in the order they would (the rest are listed after them).
_LOAD_FILES = ("dashboard.html", "result.json", "summary.json", "script.js", "k6.log")


@dataclass(frozen=True)
class ObjectiveRow:
    """An objective judged on a check, and the prediction made for it (if any)."""

    objective: CheckObjective
    prediction: Prediction | None


@dataclass(frozen=True)
class CheckRow:
    """A check's row in the checks table, its objectives' rows, and the predictions made for
    objectives it did not judge."""

    check: StoredCheck
    objectives: tuple[ObjectiveRow, ...]
    predictions: tuple[Prediction, ...]


@dataclass(frozen=True)
class ClientRow:
    """One traffic stream's exact counts and latency percentiles."""

    name: str
    sent: int
    ok: int
    failed: int
    unknown: int
    quantiles: tuple[float | None, ...]   # p50, p90, p99 of the answered requests
    max_s: float | None
    backends: str                          # ok answers by backend


def _check_rows(run: StoredRun) -> list[CheckRow]:
    rows = []
    for check in run.checks:
        predictions = {p.objective: p for p in run.predictions_for(check.name)}
        objectives = tuple(ObjectiveRow(o, predictions.pop(o.name, None))
                           for o in check.objectives)
        rows.append(CheckRow(check, objectives, tuple(predictions.values())))
    return rows


def _client_rows(history: History) -> list[ClientRow]:
    by_client: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in history.requests:
        by_client[f"{r.client} ({r.method} {r.path})"].append(r)
    rows = []
    for name, records in sorted(by_client.items()):
        outcomes = Counter(r.outcome for r in records)
        latencies = [r.latency_s for r in records if r.latency_s is not None]
        backends = Counter(r.backend for r in records if r.outcome is Outcome.OK and r.backend)
        rows.append(ClientRow(
            name, len(records), outcomes[Outcome.OK], outcomes[Outcome.FAIL],
            outcomes[Outcome.UNKNOWN],
            tuple(percentile(latencies, q) if latencies else None for q in (0.5, 0.9, 0.99)),
            max(latencies) if latencies else None,
            ", ".join(f"{b} {n:,}" for b, n in sorted(backends.items()))))
    return rows


def _load_files(run: StoredRun) -> list[str]:
    if run.load is None:
        return []
    files = [f for f in _LOAD_FILES if f in run.load.files]
    return files + [f for f in run.load.files if f not in _LOAD_FILES]


def _value_kind(value: Any) -> str:
    """How the page shows a configuration value: a key-value table, one row per item (a list
    holding tables or lists), or text."""
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list | tuple) and any(isinstance(v, dict | list) for v in value):
        return "rows"
    return "text"


def _value_text(value: Any) -> str:
    """A scalar (JSON's spelling of null and booleans) or a list of scalars, as text."""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return json.dumps(value) if value is None or isinstance(value, bool) else str(value)


@cache
def _environment() -> Environment:
    # Autoescaped: every text of a result (a check's derivation, a backend's name, a header a
    # backend sent) is data. Block tags take their line with them, so the page's markup has no
    # whitespace where the templates' layout would otherwise put it inside inline elements.
    env = Environment(loader=PackageLoader("lab.report", "templates"), autoescape=True,
                      trim_blocks=True, lstrip_blocks=True, undefined=StrictUndefined)
    env.filters.update(seconds=seconds_text, thousands=lambda n: f"{n:,}",
                       value_kind=_value_kind, value_text=_value_text)
    return env


def render(run: StoredRun) -> str:
    """The whole page for one run."""
    svg, drawn = timeline(run)  # finished SVG: the timeline escapes its own texts (svg.esc)
    conformance = any(c.conformance is not None for c in run.checks)
    return _environment().get_template(TEMPLATE).render(
        run=run, svg=Markup(svg), drawn=drawn,
        started=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started_at)),
        conformance=conformance, check_rows=_check_rows(run),
        client_rows=_client_rows(run.history),
        paragraphs=[" ".join(p.split()) for p in run.description.split("\n\n") if p.strip()],
        durations={k: f"{v:g}" for k, v in run.durations.items()},
        load_dir=run.load.directory.rstrip("/") if run.load else "", load_files=_load_files(run))


def write(directory: Path) -> Path:
    """Render ``<directory>/report.html`` from ``<directory>/result.json``; returns its path."""
    directory = Path(directory)
    path = directory / REPORT_FILE
    path.write_text(render(load(directory / RESULT_FILE)), encoding="utf-8")
    return path
