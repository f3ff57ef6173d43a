"""``lab load``: k6 against the lab, a profile or the user's own script, and ``--compare``."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from rich.live import Live
from rich.text import Text

from lab import report as run_report
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
from lab.cli.scenarios import ObjectiveOption, effective_config, say_predictions
from lab.config import LabConfig, load_load_config
from lab.errors import ConfigError, LabNotFound
from lab.load import compare as comparison
from lab.load import report
from lab.load.alongside import LOAD_CLIENT, LoadAlongside
from lab.load.k6 import find_k6
from lab.load.placement import Placement, Target
from lab.load.profiles import PROFILES, LoadPlan, Stage, build_plan, parse_stage
from lab.load.runner import LoadProgress, LoadResult, LoadRunner
from lab.load.thresholds import LoadThresholds, from_objectives
from lab.objectives import (
    ObjectiveOverrides,
    Objectives,
    load_objectives,
    parse_assignments,
    parse_seconds,
)
from lab.scenarios.loader import check_nodes, line_of, load_scenario, resolve
from lab.scenarios.model import CheckSpec, Scenario
from lab.scenarios.runner import Runner
from lab.topology.lab import Lab
from lab.verdict import Verdict

EXIT_PASS, EXIT_FAILED, EXIT_LAB_FAILED = 0, 1, 2
DEFAULT_REPORT_ROOT = Path(".lab") / "runs"


class PlanFile(BaseModel):
    """A plan file: a profile, its parameters, stages and thresholds (CLI options win)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile: str
    params: dict[str, Any] = Field(default_factory=dict)
    start_rate: Annotated[float, Field(ge=0, le=100_000)] | None = None
    stages: list[dict[str, Any]] = Field(default_factory=list)
    # The generator's own knobs (p99_s, max_dropped, abort_on_fail); the p95 and error-rate
    # bounds are objectives (load_p95, availability), set under ``objectives``.
    thresholds: dict[str, Any] = Field(default_factory=dict)
    objectives: ObjectiveOverrides | None = None  # type: ignore[valid-type]


def _read_plan_file(path: Path) -> PlanFile:
    try:
        text = path.read_text()
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such plan file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a plan file is a mapping (profile, params, stages, thresholds)")
    try:
        plan = PlanFile.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            line = line_of(root, error["loc"])
            message = error["msg"]
            if error["type"] == "extra_forbidden":
                message = f"unknown key (a plan file takes {', '.join(PlanFile.model_fields)})"
            lines.append(f"{path}:{line}: {field}: {message}")
        raise ConfigError("invalid plan file\n" + "\n".join(lines)) from None
    return plan


def _stages_from_file(plan: PlanFile, path: Path) -> tuple[Stage, ...]:
    stages = []
    for index, entry in enumerate(plan.stages):
        if set(entry) != {"duration", "target"}:
            raise ConfigError(f"{path}: stages.{index}: a stage is {{duration: 30s, target: 1500}}")
        stages.append(parse_stage(f"{entry['duration']}:{entry['target']}"))
    return tuple(stages)


def _assignments(values: list[str], what: str) -> dict[str, Any]:
    out_: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} {item!r}: expected NAME=VALUE")
        out_[key.strip()] = yaml.safe_load(value) if value.strip() else value
    return out_


def _thresholds(objectives: Objectives, base: dict[str, Any], p99: str | None,
                max_dropped: str | None, abort: bool) -> LoadThresholds:
    """k6's thresholds: p95 and error rate from the objectives in force, the rest as given."""
    values = dict(base)
    for moved, objective in (("p95", "load_p95"), ("p95_s", "load_p95"),
                             ("error_rate", "availability")):
        if moved in values:
            raise ConfigError(f"thresholds.{moved} is an objective now: set {objective} "
                              "(a plan file's objectives:, lab.toml's [objectives] or "
                              f"--objective {objective}=...)")
    if "p99" in values:
        values["p99_s"] = values.pop("p99")
    for key, given in (("p99_s", p99), ("max_dropped", max_dropped)):
        if given is not None:
            values[key] = None if given.lower() == "none" else given
    if abort:
        values["abort_on_fail"] = True
    return from_objectives(objectives, **values)


def _live_line(progress: LoadProgress) -> Text:
    p95 = f"{progress.p95_s * 1000:.1f} ms" if progress.p95_s not in (None, float("inf")) else "-"
    schedule = (
        f" (schedule {progress.scheduled_rate:.0f}/s)"
        if progress.scheduled_rate is not None
        else ""
    )
    return Text.assemble(
        ("load", "bold"),
        f"  {progress.elapsed_s:5.1f} s  rate "
        f"{progress.rate_per_s:.0f}/s{schedule}  p95 {p95}  sent {progress.sent}  ",
        (f"errors {progress.errors}", "red"),
        "  ",
        (f"dropped {progress.dropped}", "yellow"),
    )


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _attach_or_start(config: LabConfig, keep: bool) -> tuple[Lab, bool]:
    docker_engine = engine()
    try:
        lab = Lab.attach(docker_engine, config.name)
        return lab, False
    except LabNotFound:
        console.print(Text(f"lab: starting lab {config.name!r} for the load", style="dim"))
        lab = Lab(docker_engine, config)
        lab.up(
            ephemeral=not keep, say=lambda text: console.print(Text(f"lab: {text}", style="dim"))
        )
        return lab, True


def _print(result: LoadResult, as_json: bool) -> report.LoadFigures:
    figs = report.figures(result)
    path = report.write(result, figs)
    if not as_json:
        for line in report.lines(result, figs):
            out.print(line, soft_wrap=True)
        out.print(Text(f"  report: {path}"), soft_wrap=True)
    return figs


def _exit(verdicts: list[Verdict]) -> int:
    return EXIT_PASS if all(v is Verdict.PASS for v in verdicts) else EXIT_FAILED


def load(
    profile: Annotated[
        str | None,
        typer.Argument(help=f"A profile: {', '.join(PROFILES.names())}.", show_default=False),
    ] = None,
    script: Annotated[
        Path | None,
        typer.Option(
            "--script",
            help="Run your own k6 script, unchanged (LAB_BASE_URL, LAB_TOKEN, LAB_USERS, "
            "LAB_PASSWORD in its environment).",
            dir_okay=False,
        ),
    ] = None,
    plan_file: Annotated[
        Path | None,
        typer.Option(
            "--plan",
            help="A YAML plan: profile, params, start_rate, stages, thresholds.",
            dir_okay=False,
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="NAME=VALUE", help="A profile parameter (repeatable)."),
    ] = None,
    stage: Annotated[
        list[str] | None,
        typer.Option(
            "--stage", metavar="DURATION:RATE", help="Replace the stages (repeatable, in order)."
        ),
    ] = None,
    start_rate: Annotated[
        float | None, typer.Option(help="The rate the first stage starts from.")
    ] = None,
    objective: ObjectiveOption = None,
    p99: Annotated[str | None, typer.Option(help="p99 latency bound ('none': off).")] = None,
    max_dropped: Annotated[
        str | None,
        typer.Option(
            help="Share of the schedule k6 may drop before the run is unknown (default 0)."
        ),
    ] = None,
    abort_on_fail: Annotated[
        bool,
        typer.Option(
            "--abort-on-fail", help="Stop at the first failed threshold (k6 abortOnFail)."
        ),
    ] = False,
    generator: Annotated[
        Literal["network", "host"] | None,
        typer.Option(
            "--from", help="Where k6 runs: a container on the lab network (default) or the host."
        ),
    ] = None,
    no_quotas: Annotated[
        bool, typer.Option("--no-quotas", help="Do not hold nodes to CPU quotas.")
    ] = False,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="Run the profile on the checklist's before (one backend straight to "
            "PostgreSQL) and after (three behind NGINX and PgBouncer) and print the ratio.",
        ),
    ] = False,
    scenario_name: Annotated[
        str | None,
        typer.Option(
            "--scenario",
            help="Run a scenario's steps while the load runs; its checks and objectives judge "
            "both, and an availability check judges the load's own requests.",
        ),
    ] = None,
    timeout: Annotated[str, typer.Option(help="Longest a user script may run.")] = "1h",
    name: NameOption = None,
    config_path: ConfigOption = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep a lab this command started.")] = False,
    report_dir: Annotated[
        Path, typer.Option("--report-dir", help="Where each run's directory is written.")
    ] = DEFAULT_REPORT_ROOT,
    no_dashboard: Annotated[
        bool, typer.Option("--no-dashboard", help="Skip k6's HTML dashboard export.")
    ] = False,
    keep_points: Annotated[
        bool, typer.Option("--keep-points", help="Keep k6's raw CSV (points.csv).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Run k6 against the lab: a profile, a plan file or your own script.

    Exit 0: every threshold held and the generator kept its schedule; 1: a threshold failed,
    or k6 could not keep the schedule (unknown); 2: the lab or k6 failed, or the input is
    invalid."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    with lab_errors():
        file_plan = _read_plan_file(plan_file) if plan_file is not None else None
        chosen = profile or (file_plan.profile if file_plan else None)
        if (chosen is None) == (script is None):
            raise ConfigError(
                "name a profile (or a --plan file) or a --script, not both",
                hint=f"profiles: {', '.join(PROFILES.names())}",
            )
        objectives = load_objectives(config_path).with_overrides(
            file_plan.objectives if file_plan else None, str(plan_file)).with_overrides(
            parse_assignments(objective or []), "--objective")
        thresholds = _thresholds(objectives.values, file_plan.thresholds if file_plan else {},
                                 p99, max_dropped, abort_on_fail)
        plan: LoadPlan | None = None
        if chosen is not None:
            params = {
                **(file_plan.params if file_plan else {}),
                **_assignments(set_ or [], "--set"),
            }
            stages = (
                tuple(parse_stage(s) for s in stage)
                if stage
                else _stages_from_file(file_plan, plan_file)
                if file_plan and plan_file
                else ()
            )
            first = (
                start_rate
                if start_rate is not None
                else (file_plan.start_rate if file_plan else None)
            )
            plan = build_plan(
                chosen,
                params,
                thresholds,
                stages=stages,
                start_rate=first,
                source=str(plan_file) if file_plan and not set_ else "--set",
            )
        elif script is not None and not script.is_file():
            raise ConfigError(f"{script}: no such k6 script")
        if compare and plan is None:
            raise ConfigError("--compare runs a profile, not a script")
        if compare and scenario_name is not None:
            raise ConfigError("--compare and --scenario do not go together")
        scenario = load_scenario(scenario_name) if scenario_name is not None else None
        settings = load_load_config(config_path)
        if no_quotas:
            settings = settings.model_copy(update={"quotas": False})
        placement: Placement = generator or settings.generator
        find_k6(static=placement == "network")  # no k6: exit 2 before any lab starts
        config = config_for(config_path, name)
        if scenario is not None:
            config = effective_config(config, scenario)
            check_nodes(scenario, config, str(resolve(scenario_name or "")))
        limit_s = float(parse_seconds(timeout))

        def make(lab: Lab, target: Target, label: str | None, live: Live) -> LoadRunner:
            return LoadRunner(
                lab,
                plan=plan,
                script=script,
                thresholds=thresholds,
                settings=settings,
                generator=placement,
                target=target,
                report_root=report_dir,
                dashboard=not no_dashboard,
                keep_points=keep_points,
                timeout_s=limit_s,
                label=label,
                on_progress=lambda p: live.update(_live_line(p)),
            )

        if compare:
            with Live(console=console, transient=True, refresh_per_second=4) as live:
                result = comparison.run_both(
                    engine(),
                    config,
                    lambda lab, target, label: make(lab, target, label, live).run(),
                    lambda text: console.print(Text(f"lab: {text}", style="dim")),
                    publish_backend=placement == "host",
                )
            for side in (result.before, result.after):
                report.write(side.result, side.figures)
            _print_comparison(result, as_json)
            raise typer.Exit(
                _exit([result.before.result.verdict.verdict, result.after.result.verdict.verdict])
            )
        lab, started_here = _attach_or_start(config, keep)
        try:
            if scenario is not None:
                raise typer.Exit(_with_scenario(lab, scenario, make, objectives, as_json,
                                                report_dir))
            with Live(console=console, transient=True, refresh_per_second=4) as live:
                result = make(lab, Target(), None, live).run()
        finally:
            if started_here and not keep:
                lab.down()
        _print(result, as_json)
        if as_json:
            print_json(
                json.dumps(report.document(result), default=str).replace("Infinity", "null")
            )
        raise typer.Exit(_exit([result.verdict.verdict]))


def _load_check(scenario: Scenario) -> CheckSpec:
    """Availability of the load's own requests, at the scenario's own SLO where it states one."""
    slo = next((getattr(c, "slo", None) for c in scenario.checks if c.check == "availability"),
               None)
    return TypeAdapter(CheckSpec).validate_python(
        {"availability": {"client": LOAD_CLIENT, "slo": slo or 0.999}})


def _with_scenario(lab: Lab, scenario: Scenario, make: Any, objectives: Any, as_json: bool,
                   report_dir: Path) -> int:
    """The scenario's steps with the load beside them: one result, judged on both."""
    judged = scenario.model_copy(update={"checks": (*scenario.checks, _load_check(scenario))})
    with Live(console=console, transient=True, refresh_per_second=4) as live:
        alongside = LoadAlongside(make(lab, Target(), None, live))
        runner = Runner(lab, judged, objectives=objectives, alongside=alongside,
                        on_predictions=lambda stated: say_predictions(scenario, stated),
                        on_progress=lambda p: None)
        result = runner.run()
    load_verdict, load_run = Verdict.UNKNOWN, None
    if alongside.result is not None:
        # The load's own result first, so the scenario's report can link its files.
        report.write(alongside.result, report.figures(alongside.result))
        load_verdict, load_run = alongside.result.verdict.verdict, alongside.result.directory
    directory = run_report.write(result, report_dir, load_run=load_run)
    if as_json:
        print_json(json.dumps([run_report.document(result, load_run)], default=str))
    else:
        out.print(run_report.table(result))
        for note in result.notes:
            out.print(Text(f"  note: {note}"))
        out.print(Text(f"  k6 thresholds: {load_verdict.value}"))
        out.print(Text(f"  report: {directory / 'report.html'} "
                       f"(data: {directory / 'result.json'})"))
    return _exit([result.verdict, load_verdict])


def _print_comparison(result: comparison.Comparison, as_json: bool) -> None:
    rows = []
    for side in (result.before, result.after):
        figs, res = side.figures, side.result
        rows.append(
            {
                "side": side.label,
                "lab": res.lab,
                "verdict": res.verdict.verdict.value,
                "throughput_at_objectives": round(side.throughput, 1),
                "achieved_rate": round(figs.achieved_rate, 1),
                "p95_ms": None if figs.client.p95_s is None else round(figs.client.p95_s * 1000, 2),
                "break": figs.breakpoint.reason,
                "first_saturated": figs.first_saturated,
                "memory_growth": {n.node: n.memory_growth for n in figs.nodes},
                "report": str(res.directory / "result.json"),
            }
        )
    equal = {
        "rate": round(result.equal_load, 1),
        "before": result.before_at_equal.text(),
        "after": result.after_at_equal.text(),
    }
    if as_json:
        print_json(
            json.dumps(
                {
                    "sides": rows,
                    "ratio": result.ratio,
                    "claim": list(comparison.CLAIM),
                    "equal_load": equal,
                }
            )
        )
        return
    for row in rows:
        out.print(
            Text.assemble(
                (f"{row['side']:7}", "bold"),
                f" {row['throughput_at_objectives']:.0f} ok/s "
                f"at the objectives ({row['verdict']}; {row['break']})",
            ),
            soft_wrap=True,
        )
        out.print(Text(f"        first saturated: {row['first_saturated']}"), soft_wrap=True)
        out.print(Text(f"        report: {row['report']}"), soft_wrap=True)
    out.print(Text(f"{result.verdict_line()} (after / before)", style="bold"), soft_wrap=True)
    out.print(
        Text(
            f"latency at {equal['rate']:.0f} req/s: before {equal['before']}; "
            f"after {equal['after']}"
        ),
        soft_wrap=True,
    )
    if result.before.result.name == "soak":
        for side in (result.before, result.after):
            growth = ", ".join(
                f"{n.node} {n.memory_growth / 2**20:+.1f} MiB" for n in side.figures.nodes
            )
            out.print(Text(f"memory growth ({side.label}): {growth}"), soft_wrap=True)
