"""``lab list``, ``lab explain`` and ``lab run``."""

from __future__ import annotations

import hashlib
import json
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Self

import typer
from rich.live import Live
from rich.text import Text

from lab import report
from lab.checks import CHECKS
from lab.cli.common import (
    ConfigOption,
    NameOption,
    config_for,
    console,
    engine,
    lab_errors,
    out,
    print_json,
)
from lab.cli.lint import say_findings_for
from lab.config import LabConfig
from lab.engine import Engine
from lab.errors import ConfigError, LabNotFound
from lab.expectations import duration_names
from lab.objectives import ObjectivesInForce, load_objectives, parse_assignments
from lab.report import junit as junit_report
from lab.scenarios.judge import (
    RunFacts,
    expected_before,
    planned_failure_modes,
    planned_injections,
    predictions,
)
from lab.scenarios.loader import available, check_nodes, check_paths, load_scenario, resolve
from lab.scenarios.model import Scenario
from lab.scenarios.runner import Progress, Runner, RunResult, stream_facts
from lab.scenarios.steps import definition_of
from lab.topology.expect import claimed
from lab.topology.lab import Lab
from lab.topology.user_topology import user_topology
from lab.verdict import Prediction

ObjectiveOption = Annotated[list[str] | None, typer.Option(
    "--objective", "-o", metavar="NAME=VALUE",
    help="Set one objective for this run (e.g. ejection=10s, availability=99.99%); repeatable.")]


def list_scenarios() -> None:
    """List the shipped scenarios."""
    with lab_errors():
        for name, path in available().items():
            scenario = load_scenario(str(path))
            first_sentence = " ".join(scenario.description.split()).split(". ")[0].rstrip(".")
            out.print(Text.assemble((f"{name:18}", "bold"), f" {first_sentence}."), soft_wrap=True)


def effective_config(base: LabConfig, scenario: Scenario) -> LabConfig:
    config = base
    for section, values in scenario.lab.items():
        config = config.with_overrides(section, **values)
    return config


@dataclass(frozen=True)
class Plan:
    """A scenario under a configuration, before any traffic: the duration names, each
    objective's prediction and each check's expectation (label, text)."""

    names: dict[str, float]
    predictions: tuple[Prediction, ...]
    expected: tuple[tuple[str, str], ...]
    planned_s: float = 0.0


def _planned(scenario: Scenario, config: LabConfig, objectives: ObjectivesInForce) -> Plan:
    """What a scenario will do and expect under a configuration (no lab)."""
    # The user's files are read and refused here, as `lab up` would before starting anything:
    # a configuration the lab cannot run gets its one message, not a plan built on nothing.
    user_topology(config)
    check_paths(scenario, config, scenario.name)
    expectations = claimed(config, what="the configuration in force")
    streams = stream_facts(scenario)
    names = duration_names(expectations, float(streams["rate_per_s"]),  # type: ignore[arg-type]
                           float(streams["client_timeout_s"]))  # type: ignore[arg-type]
    planned = sum(definition_of(step).planned_s(step, names, 60.0) for step in scenario.steps)
    facts = RunFacts(names=tuple(names.items()), planned_s=planned,
                     failure_modes=planned_failure_modes(scenario),
                     injections=planned_injections(scenario),
                     **streams)  # type: ignore[arg-type]
    return Plan(names, predictions(scenario, expectations, facts, objectives.values),
                expected_before(scenario, expectations, facts, objectives.values), planned)


def _check_lines(scenario: Scenario, plan: Plan) -> list[Text]:
    """Each check with what it judges and, where it states one, its derived expectation."""
    lines = []
    for check, (_, expected) in zip(scenario.checks, plan.expected, strict=True):
        definition = CHECKS.get(check.check)
        params = check.model_dump(exclude_defaults=True)
        given = f" ({', '.join(f'{k} {v}' for k, v in params.items())})" if params else ""
        lines.append(Text(f"  - {definition.shown(check)}{given}: {definition.summary}"))
        if expected and expected != "-":
            lines.append(Text.assemble("      expects: ", (expected, "bold")))
    return lines


def explain(
    name: Annotated[str, typer.Argument(help="A scenario name or a path to a .yaml file.")],
    config_path: ConfigOption = None,
    objective: ObjectiveOption = None,
) -> None:
    """Print what a scenario does, what it expects and why, with the configuration's numbers."""
    with lab_errors():
        scenario = load_scenario(name)
        config = effective_config(config_for(config_path, None), scenario)
        in_force = load_objectives(config_path).with_overrides(
            scenario.objectives, f"scenario {scenario.name}").with_overrides(
            parse_assignments(objective or []), "--objective")
        plan = _planned(scenario, config, in_force)
        names = plan.names
        out.print(Text(scenario.name, style="bold"))
        out.print(Text(f"\n{' '.join(scenario.description.split())}\n"), soft_wrap=False)
        if scenario.traffic:
            out.print(Text("Traffic", style="bold"),
                      "(open model: each request leaves on schedule)")
            for s in scenario.traffic:
                kind = ("writes (acknowledged ids checked in PostgreSQL)" if s.writes
                        else f"{s.method} {s.path}")
                out.print(Text(f"  {s.client}: {s.rate:g} req/s, {kind}"))
        out.print(Text("\nSteps", style="bold"), "(numbers from the configuration in force)")
        for index, step in enumerate(scenario.steps, start=1):
            out.print(Text(f"  {index}. {definition_of(step).describe(step, names)}"))
        out.print(Text("\nChecks", style="bold"),
                  "(conformance: expectations derived from the configuration in force)")
        for line in _check_lines(scenario, plan):
            out.print(line)
        out.print(Text("\nObjectives", style="bold"), "(what the configuration predicts for each)")
        none = [Text("  none attach to these checks")]
        for line in report.prediction_lines(plan.predictions) or none:
            out.print(Text("  ") + line)
        out.print(Text(f"\nSource: {resolve(name)}"))


# How long a step-through run's traffic may wait at its prompts, in all: the streams that run
# for the whole scenario are given that much more (they still end when the steps end).
STEP_WAIT_S = 1800.0


def _say_plan(scenario: Scenario, config: LabConfig, objectives: ObjectivesInForce) -> Plan:
    """A step-through run's preamble: what the scenario does, what each check will expect and
    what the configuration predicts, before the first step."""
    plan = _planned(scenario, config, objectives)
    out.print(Text(f"{scenario.name}: ", style="bold"),
              Text(" ".join(scenario.description.split())))
    out.print(Text("\nWhat the checks will expect (from the configuration in force)", style="bold"))
    for line in _check_lines(scenario, plan):
        out.print(line)
    out.print(Text("\nObjectives", style="bold"))
    none = [Text("  none attach to these checks")]
    for line in report.prediction_lines(plan.predictions) or none:
        out.print(Text("  ") + line)
    out.print()
    return plan


class _Stepper:
    """``lab run --step``: before each step, say it and wait for Enter while traffic flows."""

    def __init__(self, live: Live, steps: int):
        self.live = live
        self.steps = steps

    def __call__(self, index: int, sentence: str) -> None:
        self.live.stop()
        out.print(Text.assemble((f"step {index}/{self.steps}: ", "bold"), sentence))
        console.print(Text("  Enter runs it (traffic keeps flowing); Ctrl-C stops the run and "
                           "heals", style="dim"))
        if sys.stdin.readline() == "":
            # No more input (a closed pipe): stop as Ctrl-C would, healing on the way out.
            raise KeyboardInterrupt
        self.live.start()


def _live_line(progress: Progress) -> Text:
    return Text.assemble((progress.phase, "bold"), f"  {progress.elapsed_s:5.1f} s  requests "
                         f"{progress.sent}  ok {progress.ok}  ",
                         (f"failed {progress.failed}", "red"),
                         "  ", (f"unknown {progress.unknown}", "yellow"))


def _on_sigterm(signum: int, frame: object) -> None:
    # SIGTERM takes the same path as Ctrl-C, so every fault is healed on the way out.
    raise KeyboardInterrupt


def say_predictions(scenario: Scenario, stated: tuple[Prediction, ...]) -> None:
    """Before any traffic: every objective the configuration cannot meet, one line each."""
    for prediction in stated:
        if prediction.reachable is False:
            console.print(Text.assemble((f"{scenario.name}: predicted: ", "bold red"),
                                        prediction.line()), soft_wrap=True)


class _Labs:
    """The labs one `lab run` uses: one per distinct configuration, started the first time a
    scenario needs it and shared by every later scenario with the same configuration, removed
    at the end (unless --keep). A lab already running under the name is used when it runs
    the configuration a scenario needs; a scenario whose `lab:` overrides ask for another
    gets a sibling lab of its own, so a kept lab is never changed under its user."""

    def __init__(self, docker_engine: Engine, keep: bool):
        self.engine = docker_engine
        self.keep = keep
        self._labs: dict[str, Lab] = {}
        self._started: list[Lab] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.keep:
            for lab in reversed(self._started):
                lab.down()

    def get(self, config: LabConfig, scenario: str) -> Lab:
        key = config.model_dump_json()
        if key in self._labs:
            return self._labs[key]
        try:
            lab = Lab.attach(self.engine, config.name)
            if lab.config != config:
                digest = hashlib.sha1(key.encode()).hexdigest()[:6]
                lab = self._attach_or_start(config.with_name(f"{config.name[:24]}-{digest}"),
                                            scenario)
        except LabNotFound:
            lab = self._start(config, scenario)
        self._labs[key] = lab
        return lab

    def _attach_or_start(self, config: LabConfig, scenario: str) -> Lab:
        try:
            lab = Lab.attach(self.engine, config.name)
        except LabNotFound:
            return self._start(config, scenario)
        if lab.config != config:
            raise ConfigError(f"lab {config.name!r} runs another configuration than scenario "
                              f"{scenario} needs", hint=f"`lab down --name {config.name}` first")
        return lab

    def _start(self, config: LabConfig, scenario: str) -> Lab:
        console.print(Text(f"lab: starting lab {config.name!r} for {scenario}", style="dim"))
        lab = Lab(self.engine, config)
        lab.up(ephemeral=not self.keep,
               say=lambda text: console.print(Text(f"lab: {text}", style="dim")))
        self._started.append(lab)
        return lab


def run(
    names: Annotated[list[str], typer.Argument(
        help="Scenario names (see `lab list`) or .yaml paths.")],
    name: NameOption = None,
    config_path: ConfigOption = None,
    seed: Annotated[int | None, typer.Option(
        help="Fix every random choice (recorded in the result).")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep a lab this command started.")] = False,
    report_dir: Annotated[Path, typer.Option(
        "--report-dir",
        help="Where each run's directory is written.")] = report.DEFAULT_REPORT_ROOT,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    objective: ObjectiveOption = None,
    junit: Annotated[Path | None, typer.Option(
        "--junit", help="Also write a JUnit XML file: a suite per scenario, a case per check "
        "and objective.", dir_okay=False)] = None,
    step: Annotated[bool, typer.Option(
        "--step", help="Before each step, print what it does and why (the configuration's "
        "numbers) and wait for Enter; traffic keeps flowing meanwhile.")] = False,
) -> None:
    """Run scenarios on a running lab, or on one started (and removed) for the purpose.

    Exit 0: every check and objective passed; 1: one failed or could not decide; 2: the lab
    failed or the input is invalid."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    with lab_errors():
        base = config_for(config_path, name)
        objectives = load_objectives(config_path)
        overrides = parse_assignments(objective or [])
        scenarios = [(load_scenario(n), str(resolve(n))) for n in names]
        for scenario, source in scenarios:
            check_nodes(scenario, effective_config(base, scenario), source)
            check_paths(scenario, effective_config(base, scenario), source)
        results: list[RunResult] = []
        with _Labs(engine(), keep) as labs:
            for scenario, _ in scenarios:
                config = effective_config(base, scenario)
                # lab lint's findings for its checks
                say_findings_for(scenario, config, objectives)
                lab = labs.get(config, scenario.name)
                if step:
                    _say_plan(scenario, config, objectives.with_overrides(
                        scenario.objectives, f"scenario {scenario.name}").with_overrides(
                        overrides, "--objective"))
                with Live(console=console, transient=True, refresh_per_second=4) as live:
                    pause = _Stepper(live, len(scenario.steps)) if step else None
                    stepping = {"before_step": pause, "step_wait_s": STEP_WAIT_S} if pause else {}
                    result = Runner(lab, scenario, seed=seed,
                                    on_progress=lambda p: live.update(_live_line(p)),
                                    on_predictions=(lambda stated, s=scenario:
                                                    say_predictions(s, stated)),
                                    objectives=objectives, objective_overrides=overrides,
                                    **stepping).run()
                results.append(result)
                directory = report.write(result, report_dir)
                if junit is not None:
                    junit_report.add_run(junit, directory, fresh=len(results) == 1)
                if not as_json:
                    out.print(report.table(result))
                    for line in report.held_lines(result.predictions):
                        out.print(line)
                    for note in result.notes:
                        out.print(Text(f"  note: {note}"))
                    out.print(Text(f"  report: {directory / 'report.html'} "
                                   f"(data: {directory / 'result.json'})"))
        if as_json:
            print_json(json.dumps([report.document(r) for r in results], default=str))
        raise typer.Exit(report.exit_code(results))
