"""``lab report`` and ``lab runs``: past runs, from the report directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lab import report
from lab.cli.common import console, lab_errors, out
from lab.errors import LabError
from lab.report import html, runs
from lab.report.stored import RESULT_FILE

ReportDirOption = Annotated[Path, typer.Option(
    "--report-dir", help="The folder `lab run` wrote the runs into.", file_okay=False)]
_STYLE = {"pass": "green", "fail": "red", "unknown": "yellow"}


def report_command(
    run_dir: Annotated[Path | None, typer.Argument(
        help="A run directory (default: the newest run in --report-dir).")] = None,
    report_dir: ReportDirOption = report.DEFAULT_REPORT_ROOT,
) -> None:
    """Render a run's report.html again from its result.json."""
    with lab_errors():
        directory = run_dir if run_dir is not None else runs.newest(report_dir)
        if not (directory / RESULT_FILE).is_file():
            raise LabError(f"{directory} holds no {RESULT_FILE}",
                           hint="name a run directory (see `lab runs`)")
        if runs.kind_of(directory) == "load":
            raise LabError(f"{directory} is a `lab load` run: its report is k6's own "
                           "dashboard.html beside its result.json",
                           hint="`lab report` renders scenario runs (see `lab runs`)")
        out.print(str(html.write(directory)), soft_wrap=True)


def runs_command(report_dir: ReportDirOption = report.DEFAULT_REPORT_ROOT) -> None:
    """List the runs in the report directory: time, scenario, verdict, seed, wall time."""
    with lab_errors():
        listed = runs.list_runs(report_dir)
        if not listed:
            console.print(f"no runs in {report_dir}")
            return
        table = Table(title=f"runs in {report_dir}", title_justify="left")
        for column in ("started", "scenario", "verdict", "seed", "wall time", "directory"):
            table.add_column(column, overflow="fold")
        for run in listed:
            summary = run.summary
            if summary is None:
                table.add_row("-", "-", "[yellow]unreadable[/]", "-", "-",
                              f"{run.directory.name}: {run.problem}")
                continue
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(summary.started_at))
            verdict = summary.verdict.value
            seed = "-" if summary.seed is None else str(summary.seed)
            table.add_row(started, summary.scenario, f"[{_STYLE[verdict]}]{verdict}[/]",
                          seed, f"{summary.wall_s:.1f} s", run.directory.name)
        out.print(table)
