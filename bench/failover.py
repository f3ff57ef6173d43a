"""Repeat the `failover` scenario on one warm lab: verdict stability and timing spread.

    python bench/failover.py --runs 10 [--out bench-failover.json] [--seed 1]

Starts one lab (``bench-<pid>``), runs the scenario --runs times back to back with the
Runner (run i uses seed --seed + i), and removes the lab in ``finally``. Per run it prints
the verdict, each check's verdict, the wall time, the measured ejection time (last request
NGINX routed to the killed backend, after the kill) and re-admission time (first 2xx from
it after its restart). The summary says whether every run gave the same verdicts, the
spread of the ejection time, the median wall time, and the goal: a run's wall time stays
within the configured ejection window (the ejection check's ``upper_s``) plus the
re-admission bound (the readmission check's ``bound_s``) plus 10 s.

Traffic goes only to the lab's published ports on 127.0.0.1 (through the Runner); the loop
is bounded by --runs and --max-seconds. Figures depend on the machine (ours: 2 cores); they
are printed, never asserted. Exit 0 when every run completed, 2 when the lab failed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from lab import report
from lab.checks import CheckResult
from lab.config import LabConfig
from lab.engine import Engine
from lab.errors import LabError
from lab.scenarios.loader import check_nodes, load_scenario, resolve
from lab.scenarios.model import Scenario
from lab.scenarios.runner import Runner, RunResult
from lab.topology.lab import Lab

SCENARIO = "failover"
GOAL_MARGIN_S = 10.0
SUMMARY_SCHEMA = 1


@dataclass(frozen=True)
class RunFigures:
    """What one run contributes to the benchmark."""

    index: int
    seed: int
    verdict: str
    checks: dict[str, str]              # check name -> verdict
    wall_s: float
    ejection_s: float | None            # ejection check's measured_s
    ejection_upper_s: float | None      # ejection check's upper_s (configured window's end)
    readmission_s: float | None         # readmission check's measured_s
    readmission_bound_s: float | None   # readmission check's bound_s
    goal_s: float | None                # ejection_upper_s + readmission_bound_s + 10 s
    within_goal: bool | None
    notes: tuple[str, ...]


def _value(checks: Sequence[CheckResult], check: str, key: str) -> float | None:
    for result in checks:
        if result.name == check:
            return dict(result.values).get(key)
    return None


def figures(index: int, result: RunResult) -> RunFigures:
    """Reduce a run result to the benchmark's figures."""
    wall = result.finished_at - result.started_at
    upper = _value(result.checks, "ejection", "upper_s")
    bound = _value(result.checks, "readmission", "bound_s")
    goal = upper + bound + GOAL_MARGIN_S if upper is not None and bound is not None else None
    return RunFigures(
        index=index, seed=result.seed, verdict=result.verdict.value,
        checks={c.name: c.verdict.value for c in result.checks}, wall_s=wall,
        ejection_s=_value(result.checks, "ejection", "measured_s"), ejection_upper_s=upper,
        readmission_s=_value(result.checks, "readmission", "measured_s"),
        readmission_bound_s=bound, goal_s=goal,
        within_goal=None if goal is None else wall <= goal, notes=result.notes,
    )


def _s(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f} s"


def print_run(run: RunFigures) -> None:
    """One line per run, plus its notes."""
    checks = "  ".join(f"{name}={verdict}" for name, verdict in run.checks.items())
    print(f"run {run.index + 1:>2} seed {run.seed}: {run.verdict:<7}  wall {_s(run.wall_s, 1):>7}  "
          f"ejection {_s(run.ejection_s):>8}  readmission {_s(run.readmission_s):>8}  "
          f"goal {_s(run.goal_s, 1)}{'' if run.within_goal is not False else ' EXCEEDED'}  "
          f"[{checks}]",
          flush=True)
    for note in run.notes:
        print(f"         note: {note}")


def stats(values: Sequence[float]) -> dict[str, float | int | None]:
    """n, min, median, max and (n >= 2) sample stdev of some seconds."""
    if not values:
        return {"n": 0, "min": None, "median": None, "max": None, "stdev": None}
    return {"n": len(values), "min": min(values), "median": statistics.median(values),
            "max": max(values), "stdev": statistics.stdev(values) if len(values) > 1 else None}


def summarize(runs: Sequence[RunFigures]) -> dict:
    """The summary figures over every completed run."""
    signatures = {(r.verdict, tuple(sorted(r.checks.items()))) for r in runs}
    judged = [r for r in runs if r.within_goal is not None]
    return {
        "runs": len(runs),
        "same_verdicts": len(signatures) <= 1,
        "verdicts": {v: sum(r.verdict == v for r in runs)
                     for v in sorted({r.verdict for r in runs})},
        "ejection_s": stats([r.ejection_s for r in runs if r.ejection_s is not None]),
        "readmission_s": stats([r.readmission_s for r in runs if r.readmission_s is not None]),
        "wall_s": stats([r.wall_s for r in runs]),
        "goal_s": stats([r.goal_s for r in judged if r.goal_s is not None]),
        "within_goal": sum(bool(r.within_goal) for r in judged),
        "goal_judged": len(judged),
    }


def _spread(name: str, figures: dict) -> str:
    if not figures["n"]:
        return f"{name}: no measurement"
    stdev = "-" if figures["stdev"] is None else f"{figures['stdev']:.3f}"
    return (f"{name}: min {figures['min']:.3f}  median {figures['median']:.3f}  "
            f"max {figures['max']:.3f}  stdev {stdev} s (n={figures['n']})")


def print_summary(summary: dict, runs: Sequence[RunFigures]) -> None:
    """The summary block."""
    print(f"\nsummary over {summary['runs']} run(s)")
    if summary["same_verdicts"]:
        print("  verdicts: the same in every run")
    else:
        print(f"  verdicts: DIFFER between runs {summary['verdicts']}")
        for run in runs:
            print(f"    run {run.index + 1}: {run.verdict} {run.checks}")
    print("  " + _spread("ejection", summary["ejection_s"]))
    print("  " + _spread("readmission", summary["readmission_s"]))
    wall = summary["wall_s"]
    print(f"  wall time: median {_s(wall['median'], 1)} (min {_s(wall['min'], 1)}, "
          f"max {_s(wall['max'], 1)})")
    if summary["goal_judged"]:
        goal = summary["goal_s"]
        print(f"  goal: wall time <= ejection upper_s + readmission bound_s + {GOAL_MARGIN_S:g} s "
              f"(median {_s(goal['median'], 1)}): {summary['within_goal']}/"
              f"{summary['goal_judged']} runs within"
              + ("" if summary["within_goal"] == summary["goal_judged"] else "  -- NOT MET"))
    else:
        print("  goal: not judged (no run reported both the ejection and re-admission bounds)")


def _rounded(value: object) -> object:
    """Floats to milliseconds, throughout a JSON-ready structure."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def _config(name: str, scenario: Scenario) -> LabConfig:
    # Apply the scenario's own [lab] overrides, as `lab run` does.
    config = LabConfig(name=name)
    for section, values in scenario.lab.items():
        config = config.with_overrides(section, **values)
    check_nodes(scenario, config, str(resolve(SCENARIO)))
    return config


def _on_sigterm(signum: int, frame: object) -> None:
    # SIGTERM takes the Ctrl-C path: the Runner heals its faults and the lab is removed.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the scenario repeatedly, print (and optionally write) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="consecutive runs (default 10)")
    parser.add_argument("--seed", type=int, default=1, help="run i uses seed + i (default 1)")
    parser.add_argument("--out", type=Path,
                        help="write the JSON summary here (default: print only)")
    parser.add_argument("--report-dir", type=Path,
                        help="also write each run's full result.json under this folder")
    parser.add_argument("--max-seconds", type=float, default=1200.0,
                        help="start no run after this many seconds (default 1200)")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 100:
        print("error: --runs in [1, 100]", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    runs: list[RunFigures] = []
    error: str | None = None
    code = 0
    engine: Engine | None = None
    lab: Lab | None = None
    started = time.monotonic()
    try:
        scenario = load_scenario(SCENARIO)
        config = _config(f"bench-{os.getpid()}", scenario)
        engine = Engine.connect()
        lab = Lab(engine, config)
        up = lab.up(ephemeral=True)
        built = f"; built {', '.join(up.images_built)}" if up.images_built else ""
        print(f"lab {config.name!r} up in {up.seconds:.1f} s{built}; {os.cpu_count()} cores; "
              f"{args.runs} run(s) of {SCENARIO}", flush=True)
        deadline = time.monotonic() + min(args.max_seconds, 7200.0)
        for index in range(args.runs):
            if time.monotonic() > deadline:
                print(f"stopped after {index} run(s): --max-seconds {args.max_seconds:g} reached")
                break
            result = Runner(lab, scenario, seed=args.seed + index).run()
            if args.report_dir is not None:
                report.write(result, args.report_dir)
            run = figures(index, result)
            runs.append(run)
            print_run(run)
    except LabError as exc:
        error = f"{type(exc).__name__}: {exc.render()}"
        print(error, file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        error = "interrupted"
        print(error, file=sys.stderr)
        code = 130
    finally:
        if lab is not None:
            lab.down()
        if engine is not None:
            engine.close()
    summary = summarize(runs)
    if runs:
        print_summary(summary, runs)
    if args.out is not None:
        document = {"schema": SUMMARY_SCHEMA, "scenario": SCENARIO, "cores": os.cpu_count(),
                    "goal_margin_s": GOAL_MARGIN_S, "runs_requested": args.runs,
                    "bench_seconds": round(time.monotonic() - started, 3), "error": error,
                    "summary": summary, "runs": [asdict(r) for r in runs]}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(_rounded(document), indent=1) + "\n")
        print(f"\nJSON summary: {args.out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
