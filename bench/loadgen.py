"""How much of the system `lab load` measures, against wrk, on the same quota'd target.

    python bench/loadgen.py [--name N] [--rounds 3] [--seconds 8] [--connections 32]

Starts a lab (or uses a running one), holds its nodes to the [load] CPU quotas for the whole
bench, and alternates, round by round: wrk (a closed loop of ``--connections``, from the host
through the published 127.0.0.1 port), then `lab load` at its highest rate: offered 1.5x what
wrk reached with a fixed pool of VUs (4x wrk's connections), so k6 sends as fast as they can
(the rest of the schedule drops, so each such run is ``unknown``), held ``--seconds`` after a
2 s ramp; first with k6 on the host, then on the lab network (the default placement). An
open model with VUs to spare would instead hold a thousand requests in flight at overload
and measure the system's queueing, not its rate. Each prints its answers per second over
the hold; ``ratio`` is lab load's (default placement) over wrk's, per round and as the median.
Also printed: each generator's own CPU, and the 1-minute load average before and after.

The quotas are ./lab.toml's ``[load.cpus]``. On a 2-core machine the defaults give the nodes
1.65 cores, and k6 (about 350 us of CPU per request, wrk 20) then takes the system's compute:
``backend = 0.15`` leaves the generator room, and the ratio says how faithful k6 is rather
than how crowded the machine is (README, "Load figures measured here").

Every run is bounded (wrk by -d, k6 by its schedule); the lab this script started is removed.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lab.config import LabConfig, load_load_config
from lab.engine import Engine
from lab.errors import LabError, LabNotFound
from lab.load.placement import hold_quotas, restore_quotas
from lab.load.profiles import build_plan
from lab.load.report import figures
from lab.load.runner import LoadRunner
from lab.load.thresholds import LoadThresholds
from lab.topology.lab import Lab

OVERLOAD = 1.5
RAMP_S = 2.0


def wrk(url: str, seconds: float, connections: int) -> tuple[float, float]:
    """wrk's requests/s and its CPU (cores) over the run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    if match is None:
        raise RuntimeError(f"wrk printed no rate:\n{done.stdout}{done.stderr}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    if non2xx:
        print(f"  note: wrk saw {non2xx.group(1)} non-2xx answers", file=sys.stderr)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(match.group(1)), cpu / wall


def lab_load(
    lab: Lab, rate: float, seconds: float, path: str, generator: str, vus: int, report_root: Path
) -> tuple[float, float | None, str]:
    """lab load's ok answers/s over the hold (the ramp left out), its CPU, its verdict."""
    plan = build_plan(
        "load",
        {"rate": round(rate), "ramp_s": RAMP_S, "duration_s": seconds, "path": path, "vus": vus},
        LoadThresholds(p95_s=None, error_rate=None),
    )
    result = LoadRunner(
        lab,
        plan=plan,
        generator=generator,  # type: ignore[arg-type]
        settings=load_load_config(None).model_copy(update={"quotas": False}),
        report_root=report_root,
        dashboard=False,
    ).run()
    figs = figures(result)
    hold = [w for w in figs.windows if RAMP_S + 1 <= w.start < RAMP_S + seconds]
    ok_rate = sum(w.ok for w in hold) / sum(w.width for w in hold) if hold else 0.0
    return ok_rate, figs.generator_cpus, result.verdict.verdict.value


def main(argv: list[str] | None = None) -> int:
    """Alternate wrk and lab load, print each figure and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=f"bench-loadgen-{os.getpid()}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--path", default="/health")
    parser.add_argument("--offered", type=float, default=OVERLOAD,
                        help="k6's arrival rate as a multiple of what wrk reached")
    parser.add_argument(
        "--vus",
        type=int,
        default=0,
        help="k6's VUs (default 4x --connections: k6 spends more per request "
        "than wrk, so it needs more in flight for the same rate)",
    )
    parser.add_argument("--report-dir", type=Path, default=Path(".lab") / "bench-loadgen")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 10 or not 1 <= args.seconds <= 60:
        print("error: --rounds in [1, 10], --seconds in [1, 60]", file=sys.stderr)
        return 2
    vus = args.vus or 4 * args.connections
    engine = Engine.connect()
    started_here = False
    try:
        lab = Lab.attach(engine, args.name)
    except LabNotFound:
        lab = Lab(engine, LabConfig(name=args.name))
        lab.up(ephemeral=True)
        started_here = True
    settings = load_load_config(None)
    quotas = {node: settings.cpus.get(role) for node, role in lab.roles.items()}
    print(f"quotas (cores): {', '.join(f'{n} {c:g}' for n, c in quotas.items() if c)}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    before = hold_quotas(lab, quotas)
    ratios = []
    try:
        url = f"{lab.endpoints.nginx_http}{args.path}"
        for round_ in range(1, args.rounds + 1):
            wrk_rate, wrk_cpu = wrk(url, args.seconds, args.connections)
            offered = args.offered * wrk_rate
            host_rate, host_cpu, host_verdict = lab_load(
                lab, offered, args.seconds, args.path, "host", vus, args.report_dir
            )
            net_rate, net_cpu, net_verdict = lab_load(
                lab, offered, args.seconds, args.path, "network", vus, args.report_dir
            )
            ratio = net_rate / wrk_rate if wrk_rate else 0.0
            ratios.append(ratio)
            print(
                f"round {round_}: wrk {wrk_rate:7.0f} req/s (cpu {wrk_cpu:.2f}) | "
                f"lab load host {host_rate:7.0f} ok/s (cpu {host_cpu or 0:.2f}, {host_verdict}) | "
                f"lab load network {net_rate:7.0f} ok/s (cpu {net_cpu or 0:.2f}, {net_verdict}) "
                f"| offered {offered:.0f}/s | ratio {ratio:.2f} (host {host_rate / wrk_rate:.2f})"
            )
    except LabError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        return 2
    finally:
        restore_quotas(lab, before)
        if started_here:
            lab.down()
    print(
        f"ratio (lab load / wrk, median of {len(ratios)}): {statistics.median(ratios):.2f}"
        f"  (goal >= 0.9)"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
