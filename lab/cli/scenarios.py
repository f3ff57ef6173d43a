"""``lab list``, ``lab explain`` and ``lab run``."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.text import Text

from lab import report
from lab.cli.common import ConfigOption, NameOption, config_for, console, engine, lab_errors, out
from lab.config import LabConfig
from lab.errors import ConfigError, LabNotFound
from lab.scenarios.loader import available, check_nodes, load_scenario, resolve
from lab.scenarios.model import Scenario
from lab.scenarios.runner import Progress, Runner, RunResult
from lab.topology.lab import Lab


def list_scenarios() -> None:
    """List the shipped scenarios."""
    with lab_errors():
        for name, path in available().items():
            scenario = load_scenario(str(path))
            first_sentence = " ".join(scenario.description.split()).split(". ")[0].rstrip(".")
            out.print(f"[bold]{name:18}[/] {first_sentence}.", soft_wrap=True)


def explain(name: Annotated[str, typer.Argument(help="A scenario name or a path to a .yaml file.")]) -> None:
    """Print what a scenario does, what it expects and why."""
    with lab_errors():
        scenario = load_scenario(name)
        out.print(f"[bold]{scenario.name}[/]\n\n{scenario.description.strip()}\n")
        if scenario.traffic:
            out.print("[bold]Traffic[/] (open model: each request leaves on schedule)")
            for s in scenario.traffic:
                kind = "writes (acknowledged ids checked in PostgreSQL)" if s.writes else f"{s.method} {s.path}"
                out.print(f"  {s.client}: {s.rate:g} req/s, {kind}")
        out.print("\n[bold]Steps[/]")
        for step in scenario.steps:
            out.print(f"  - {step.model_dump(exclude_defaults=True)}")
        out.print("\n[bold]Checks[/] (expectations are derived from the nginx.conf NGINX runs)")
        for check in scenario.checks:
            params = check.model_dump(exclude_defaults=True, exclude={"name"})
            out.print(f"  - {check.name} {params if params else ''}")
        out.print(f"\nSource: {resolve(name)}")


def _effective_config(base: LabConfig, scenario: Scenario) -> LabConfig:
    config = base
    for section, values in scenario.lab.items():
        config = config.with_overrides(section, **values)
    return config


def _live_line(progress: Progress) -> Text:
    return Text.from_markup(
        f"[bold]{progress.phase}[/]  {progress.elapsed_s:5.1f} s  requests {progress.sent}  "
        f"ok {progress.ok}  [red]failed {progress.failed}[/]  [yellow]unknown {progress.unknown}[/]")


def _on_sigterm(signum: int, frame: object) -> None:
    # SIGTERM takes the same path as Ctrl-C, so every fault is healed on the way out.
    raise KeyboardInterrupt


def run(
    names: Annotated[list[str], typer.Argument(help="Scenario names (see `lab list`) or .yaml paths.")],
    name: NameOption = None,
    config_path: ConfigOption = None,
    seed: Annotated[int | None, typer.Option(help="Fix every random choice (recorded in the result).")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep a lab this command started.")] = False,
    report_dir: Annotated[Path, typer.Option("--report-dir", help="Where each run's directory is written.")] = report.DEFAULT_REPORT_ROOT,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Run scenarios on a running lab, or on one started (and removed) for the purpose.

    Exit 0: every check passed; 1: a check failed or could not decide; 2: the lab failed."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    with lab_errors():
        base = config_for(config_path, name)
        scenarios = [(load_scenario(n), str(resolve(n))) for n in names]
        for scenario, source in scenarios:
            check_nodes(scenario, _effective_config(base, scenario), source)
        docker_engine = engine()
        results: list[RunResult] = []
        for scenario, _ in scenarios:
            config = _effective_config(base, scenario)
            started_here = False
            try:
                lab = Lab.attach(docker_engine, config.name)
                if lab.config != config:
                    raise ConfigError(
                        f"lab {config.name!r} runs another configuration than scenario {scenario.name} needs",
                        hint=f"`lab down --name {config.name}` first, or run with another --name")
            except LabNotFound:
                console.print(f"[dim]lab:[/] starting lab {config.name!r} for {scenario.name}")
                lab = Lab(docker_engine, config)
                lab.up(ephemeral=not keep, say=lambda text: console.print(f"[dim]lab:[/] {text}"))
                started_here = True
            try:
                with Live(console=console, transient=True, refresh_per_second=4) as live:
                    runner = Runner(lab, scenario, seed=seed, on_progress=lambda p: live.update(_live_line(p)))
                    result = runner.run()
            finally:
                if started_here and not keep:
                    lab.down()
            results.append(result)
            directory = report.write(result, report_dir)
            if not as_json:
                out.print(report.table(result))
                for note in result.notes:
                    out.print(f"  note: {note}")
                out.print(f"  report: {directory / 'result.json'}")
        if as_json:
            out.print_json(json.dumps([report.document(r) for r in results], default=str))
        raise typer.Exit(report.exit_code(results))
