"""Time the topology: a cold start, warm `lab up` against `docker compose up --wait`, image sizes.

    python bench/topology.py                      # cold start, then 5 warm rounds, sizes
    python bench/topology.py --runs 5 --skip-cold # warm rounds only
    python bench/topology.py --compose /path/to/docker-compose   # a compose v2 binary

**Cold** (skipped with --skip-cold) starts from no lab image at all without touching anyone
else's: it bootstraps a fresh Debian base under its own tag (``failover-lab/base:bench-<pid>``, with
debootstrap, as a machine without a registry does), builds every role on it
(the tags are new because the base's id is part of every image's hash; ``:latest`` is left
alone), starts a lab on those images once (its first `lab up`), then removes the lab and
every image it built. Printed: the base, each build, the builds' wall time, the first `up`,
and their sum.

**Warm** rounds alternate the lab's own `lab up` (in process, images present, until every
readiness probe passed) and `docker compose up --wait` of the file `lab compose export`
writes (with the lab's current image tags, and the backends' healthcheck every 1 s like
PostgreSQL's; compose waits for the containers to run and for those healthchecks). Each is
removed before the next starts. Printed: every run, both medians and their ratio, and the
per-node timeline of the median `lab up` (``lab up --timings``) with each node's median.

Compose is found as `docker compose` (the plugin) or a `docker-compose` v2 binary on PATH
(Debian: `docker-compose` from trixie on, or Docker's `docker-compose-plugin`); without
one the compose rounds are skipped and the bench says so. The compose project is named
``bench-<pid>`` and removed in ``finally``, like the lab. Loops are bounded by --runs and
--max-seconds. Figures depend on the machine (ours: 2 cores); they are printed, never
asserted. --out FILE writes them as JSON too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from lab.config import LabConfig
from lab.engine import LABEL_ROLE, Engine
from lab.errors import LabError
from lab.topology.compose import export_compose, find_compose
from lab.topology.images import (
    BOOTSTRAPPED_BASE,
    REPOSITORY,
    ROLES,
    bootstrap_base,
    deps_reference,
    ensure_images,
)
from lab.topology.lab import Lab
from lab.topology.timeline import UpTimeline

MB = 1_000_000  # Docker reports sizes in decimal megabytes


def spread(values: Sequence[float]) -> str:
    """``median m (min a, max b)`` of some seconds, or ``-`` for none."""
    if not values:
        return "-"
    return (f"median {statistics.median(values):.2f} s (min {min(values):.2f}, "
            f"max {max(values):.2f}, n={len(values)})")


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, for the record."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def base_reference(engine: Engine, config: LabConfig) -> str | None:
    """The base image the lab's builds use, if it is present."""
    for reference in (config.build.base_image, BOOTSTRAPPED_BASE):
        if engine.image_id(reference):
            return reference
    return None


# -- cold -------------------------------------------------------------------------------------

def bench_cold(engine: Engine, config: LabConfig, keep: bool) -> dict:
    """Bootstrap a base of its own, build every role on it, start a lab once; remove it all."""
    tag = f"{REPOSITORY}/base:bench-{os.getpid()}"
    cold = LabConfig(name=f"{config.name}-cold").with_overrides("build", base_image=tag)
    print(f"\ncold start: a fresh base (debootstrap) under {tag}, every role built on it, "
          "one `lab up`", flush=True)
    made: list[str] = []
    figures: dict = {}
    try:
        started = time.monotonic()
        bootstrap_base(engine, cold.build, tag, lambda text: print(f"  {text}", flush=True))
        made.append(tag)
        figures["base_s"] = time.monotonic() - started
        print(f"  {'base':<10} {figures['base_s']:7.1f} s   {tag}", flush=True)
        base_id = engine.image_id(tag) or tag
        started = time.monotonic()

        def progress(role: str, line: str) -> None:
            if line in ("starting", "done"):
                # One write per line: the build threads print at the same time.
                sys.stdout.write(f"  {time.monotonic() - started:6.1f} s  {role} {line}\n")
                sys.stdout.flush()

        refs = ensure_images(engine, cold.build, tag_latest=False, on_progress=progress)
        figures["build_s"] = time.monotonic() - started
        made += [ref.reference for ref in refs.values()]
        made += [d for d in (deps_reference(role, base_id) for role in ROLES) if d]
        figures["roles_s"] = {role: round(ref.seconds, 1) for role, ref in refs.items()}
        for role in ROLES:
            print(f"  {role:<10} {refs[role].seconds:7.1f} s   {refs[role].reference}")
        print(f"  {'builds':<10} {figures['build_s']:7.1f} s   wall time (they overlap)")
        lab = Lab(engine, cold)
        try:
            result = lab.up(ephemeral=True)
            figures["first_up_s"] = result.seconds
        finally:
            lab.down()
        print(f"  {'first up':<10} {figures['first_up_s']:7.1f} s")
        figures["total_s"] = figures["base_s"] + figures["build_s"] + figures["first_up_s"]
        print(f"  {'cold total':<10} {figures['total_s']:7.1f} s   base + builds + first `lab up`"
              f"   (load average {load_average()})")
        built = {role: ref.reference for role, ref in refs.items()}
        figures["sizes_mb"] = image_sizes(engine, tag, built)
    finally:
        if not keep:
            for reference in reversed(made):
                engine.remove_image(reference)
    return figures


# -- warm -------------------------------------------------------------------------------------

class ComposeStack:
    """The exported compose file, pinned to the lab's images, as project ``bench-<pid>``."""

    def __init__(self, command: list[str], config: LabConfig, images: dict[str, str],
                 directory: Path):
        self.command = command
        compose_file = export_compose(config, directory)
        override = directory / "bench-override.yml"
        document = yaml.safe_load(compose_file.read_text())
        services = {}
        for name, service in document["services"].items():
            role = service["labels"][LABEL_ROLE]
            services[name] = {"image": images[role]}
            if role == "backend":
                services[name]["healthcheck"] = {"interval": "1s", "timeout": "3s", "retries": 60}
        override.write_text(yaml.safe_dump({"services": services}))
        self.base = [*command, "-p", f"bench-{os.getpid()}", "-f", str(compose_file),
                     "-f", str(override)]

    def up(self) -> float:
        started = time.monotonic()
        done = subprocess.run([*self.base, "up", "-d", "--wait", "--quiet-pull"],
                              capture_output=True, text=True, check=False, timeout=180)
        seconds = time.monotonic() - started
        if done.returncode != 0:
            raise LabError("docker compose up --wait failed", details=done.stderr[-2000:])
        return seconds

    def down(self) -> float:
        started = time.monotonic()
        subprocess.run([*self.base, "down", "-v", "--timeout", "1"], capture_output=True,
                       check=False, timeout=120)
        return time.monotonic() - started


def bench_warm(engine: Engine, config: LabConfig, images: dict[str, str], runs: int,
               max_seconds: float, compose: list[str] | None) -> dict:
    """``runs`` rounds of `lab up`/down and compose up/down, alternating."""
    what = "`lab up`" + (" and `docker compose up --wait`" if compose else "")
    print(f"\nwarm {what}, alternating, {runs} round(s), load average {load_average()}")
    if compose is None:
        print("  compose: no `docker compose` v2 found (see --compose); compose rounds skipped")
    ups: list[float] = []
    downs: list[float] = []
    timelines: list[UpTimeline] = []
    compose_ups: list[float] = []
    compose_downs: list[float] = []
    deadline = time.monotonic() + max_seconds
    lab = Lab(engine, config)
    with tempfile.TemporaryDirectory(prefix="bench-compose-") as directory:
        stack = ComposeStack(compose, config, images, Path(directory)) if compose else None
        try:
            for index in range(runs):
                if time.monotonic() > deadline:
                    print(f"  stopped after {index} round(s): --max-seconds {max_seconds:g}")
                    break
                lab = Lab(engine, config)  # fresh secrets each run, as a new `lab up` would have
                result = lab.up(ephemeral=True)
                started = time.monotonic()
                lab.down()
                downs.append(time.monotonic() - started)
                ups.append(result.seconds)
                if result.timeline is not None:
                    timelines.append(result.timeline)
                line = (f"  round {index + 1}: lab up {result.seconds:5.2f} s  "
                        f"down {downs[-1]:4.2f} s")
                if stack is not None:
                    compose_ups.append(stack.up())
                    compose_downs.append(stack.down())
                    line += (f"   compose up {compose_ups[-1]:5.2f} s  "
                             f"down {compose_downs[-1]:4.2f} s")
                print(line, flush=True)
        finally:
            lab.down()
            if stack is not None:
                stack.down()
    print(f"  lab up      {spread(ups)}")
    print(f"  lab down    {spread(downs)}")
    figures: dict = {"lab_up_s": ups, "lab_down_s": downs, "load_average": load_average()}
    if compose_ups:
        ratio = statistics.median(ups) / statistics.median(compose_ups)
        print(f"  compose up  {spread(compose_ups)}")
        print(f"  compose down {spread(compose_downs)}")
        print(f"  lab up / compose up (medians): {ratio:.2f}")
        figures.update(compose_up_s=compose_ups, compose_down_s=compose_downs, ratio=ratio)
    if timelines:
        print_timelines(timelines)
        median_run = sorted(timelines, key=lambda t: t.total_s)[len(timelines) // 2]
        figures["median_timeline"] = median_run.as_dict()
    return figures


def print_timelines(timelines: list[UpTimeline]) -> None:
    """The median run's timeline, then each node's median created/started/ready."""
    median_run = sorted(timelines, key=lambda t: t.total_s)[len(timelines) // 2]
    print(f"\n  timeline of the median `lab up` ({median_run.total_s:.2f} s; "
          "seconds since it began)")
    for line in median_run.lines():
        print(f"    {line}")
    print("\n  per node, median over the runs (s)")
    print(f"    {'node':10} {'created':>7} {'started':>7} {'probing':>7} {'ready':>7}")
    for index, node in enumerate(median_run.nodes):
        values = []
        for field in ("created_s", "started_s", "probing_s", "ready_s"):
            times = [getattr(t.nodes[index], field) for t in timelines
                     if getattr(t.nodes[index], field) is not None]
            values.append(f"{statistics.median(times):7.2f}" if times else "      -")
        print(f"    {node.node:10} {' '.join(values)}")


# -- sizes ------------------------------------------------------------------------------------

def image_sizes(engine: Engine, base: str, images: dict[str, str]) -> dict[str, float]:
    """Print each image's size and what it adds to the shared base; returns them in MB."""
    base_size = engine.image_size(base)
    print("\ndisk used by the images (Docker's size: each includes the shared base layers)")
    print(f"  {'base':<10} {base_size / MB:8.1f} MB   {base}")
    sizes = {"base": round(base_size / MB, 1)}
    unique = base_size
    for role in ROLES:
        size = engine.image_size(images[role])
        unique += max(0, size - base_size)
        sizes[role] = round(size / MB, 1)
        print(f"  {role:<10} {size / MB:8.1f} MB   "
              f"({(size - base_size) / MB:+7.1f} MB over the base)"
              f"   {images[role]}")
    print(f"  {'total':<10} {unique / MB:8.1f} MB   base once plus each role's own layers")
    return sizes


def _on_sigterm(signum: int, frame: object) -> None:
    # SIGTERM takes the Ctrl-C path, so the lab and the compose stack are removed in `finally`.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="warm rounds (default 5)")
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold start")
    parser.add_argument("--skip-compose", action="store_true", help="no compose rounds")
    parser.add_argument("--compose", help="a compose v2 binary (default: `docker compose`, "
                                          "else docker-compose on PATH)")
    parser.add_argument("--keep-cold-images", action="store_true",
                        help="leave the cold start's base and images on disk")
    parser.add_argument("--max-seconds", type=float, default=900.0,
                        help="start no warm round after this many seconds (default 900)")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 50:
        print("error: --runs in [1, 50]", file=sys.stderr)
        return 2
    compose = None if args.skip_compose else find_compose(args.compose)
    if args.compose and compose is None:
        print(f"error: {args.compose} is not a compose v2 binary", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    config = LabConfig(name=f"bench-{os.getpid()}")
    engine = Engine.connect()
    figures: dict = {"schema": 1, "cores": os.cpu_count()}
    try:
        print(f"machine: {os.cpu_count()} cores, load average {load_average()}")
        if not args.skip_cold:
            figures["cold"] = bench_cold(engine, config, args.keep_cold_images)
        refs = ensure_images(engine, config.build)
        built = [role for role, ref in refs.items() if ref.built]
        if built:
            print(f"built missing images first: {', '.join(built)}")
        images = {role: ref.reference for role, ref in refs.items()}
        figures["warm"] = bench_warm(engine, config, images, args.runs,
                                     min(args.max_seconds, 3600.0), compose)
        base = base_reference(engine, config)
        if base is not None:
            figures["sizes_mb"] = image_sizes(engine, base, images)
    except LabError as error:
        print(f"{type(error).__name__}: {error.render()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        engine.close()
        if args.out:
            args.out.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
