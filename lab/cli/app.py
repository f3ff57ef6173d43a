"""The ``lab`` Typer application."""

from __future__ import annotations

import typer

from lab.cli import compose, faults, lint, load, reference, report, scenarios, topology, watch

app = typer.Typer(
    name="lab",
    no_args_is_help=True,
    help="Failover Lab: a local replica of a production topology, and chaos scenarios against it.",
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.command()(topology.up)
app.command()(topology.status)
app.command()(topology.down)
app.command("list")(scenarios.list_scenarios)
app.command()(scenarios.explain)
app.command()(scenarios.run)
app.command("break")(faults.break_)
app.command()(faults.heal)
app.command("faults")(faults.faults)
app.command()(watch.watch)
app.command("lint")(lint.lint_command)
app.command("report")(report.report_command)
app.command("runs")(report.runs_command)
app.command()(load.load)
app.command("reference")(reference.reference_command)
app.add_typer(topology.images_app, name="images")
app.add_typer(compose.compose_app, name="compose")


def main() -> None:
    app()
