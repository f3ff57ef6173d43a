"""``lab lint``: review the configuration in force without Docker."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.text import Text

from lab.cli.common import ConfigOption, config_for, console, lab_errors, out, print_json
from lab.config import LabConfig, config_path
from lab.lint import (
    DEFAULT_SCENARIO,
    Assumptions,
    Finding,
    Level,
    LintReport,
    for_checks,
    lint,
    traffic_of,
)
from lab.objectives import ObjectivesInForce, load_objectives
from lab.scenarios.loader import load_scenario
from lab.scenarios.model import Scenario

_STYLE = {Level.ERROR: "bold red", Level.WARNING: "yellow"}


def finding_text(finding: Finding, *, indent: str = "") -> Text:
    """One finding as people read it: level, rule, place; the arithmetic, consequence, fix."""
    return Text.assemble(
        indent, (f"{finding.level.value:7}", _STYLE[finding.level]), " ",
        (finding.rule, "bold"), f"  {finding.where}\n",
        f"{indent}  {finding.arithmetic}\n",
        f"{indent}  consequence: {finding.consequence}\n",
        f"{indent}  fix: {finding.fix}")


def document(report: LintReport, source: str) -> dict:
    """The review as JSON (schema 1; fields are only ever added)."""
    traffic = report.traffic
    return {"schema": 1, "config": source, "errors": report.errors, "warnings": report.warnings,
            "sources": dict(report.sources),
            "traffic": {"scenario": traffic.scenario,
                        "streams": [{"client": s.client, "rate_per_s": s.rate_per_s,
                                     "method": s.method, "path": s.path,
                                     "timeout_s": s.timeout_s} for s in traffic.streams]},
            "findings": [f.as_dict() for f in report.findings]}


def lint_command(
    config_file: ConfigOption = None,
    scenario_name: Annotated[str | None, typer.Option(
        "--scenario", "-s", metavar="NAME",
        help=f"Do the arithmetic at this scenario's traffic (a name or a .yaml path; default: "
             f"{DEFAULT_SCENARIO}'s rates). A scenario named here also brings its own lab.toml "
             "overrides and objectives, as `lab run` would.")] = None,
    backend_latency: Annotated[float | None, typer.Option(
        "--backend-latency", metavar="SECONDS", min=0.001,
        help="The slowest answer a healthy backend gives at the scenario's rate (its p99 "
             "under that load); default: the reference backend's database budget.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Review the configuration in force (rendered or your own files) against the objectives
    and the failure behaviours the lab has measured, without Docker.

    Exit 0: no finding at error level; 1: at least one; 2: the input is invalid."""
    with lab_errors():
        config = config_for(config_file, None)
        objectives = load_objectives(config_file)
        scenario = load_scenario(scenario_name or DEFAULT_SCENARIO)
        if scenario_name is not None:
            for section, values in scenario.lab.items():
                config = config.with_overrides(section, **values)
            objectives = objectives.with_overrides(scenario.objectives,
                                                   f"scenario {scenario.name}")
        report = lint(config, objectives.values, traffic_of(scenario),
                      Assumptions(backend_latency_s=backend_latency))
        source = str(config_path(config_file) or "defaults (no lab.toml)")
        if as_json:
            print_json(json.dumps(document(report, source)))
        else:
            out.print(Text(f"traffic: {report.traffic.text()}", style="dim"), soft_wrap=True)
            for finding in report.findings:
                out.print(finding_text(finding), soft_wrap=True)
            out.print(Text(f"{source}: {report.errors} errors, {report.warnings} warnings"
                           + ("" if report.findings else ": nothing found")))
    raise typer.Exit(1 if report.errors else 0)


def say_findings_for(scenario: Scenario, config: LabConfig, objectives: ObjectivesInForce) -> None:
    """Before a run: the lint findings that concern the scenario's checks, one block each, at
    the scenario's own rates."""
    in_force = objectives.with_overrides(scenario.objectives, f"scenario {scenario.name}")
    findings = for_checks(lint(config, in_force.values, traffic_of(scenario)),
                          (c.check for c in scenario.checks))
    for finding in findings:
        console.print(Text.assemble((f"{scenario.name}: lint: ", "bold"),
                                    finding_text(finding)), soft_wrap=True)
