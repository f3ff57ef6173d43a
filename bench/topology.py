"""Time the topology: cold image builds, warm `lab up` to all-ready, `lab down`, image disk use.

    python bench/topology.py                 # cold build of every role, then 5 warm up/down
    python bench/topology.py --runs 1 --skip-cold

The cold build (``ensure_images(force=True)``) ignores Docker's layer cache, so it is a true
cold build of every role; it re-tags the images in place (their content hash is unchanged),
and the images it replaces stay on disk, untagged, until `docker image prune`. The base image
(pulled ``debian:bookworm`` or the debootstrapped ``failover-lab/base:bookworm``) is not part
of it: when it is missing it is fetched first and timed on its own line.

Each warm run starts a lab named ``bench-<pid>`` with the images already built and times it
until every node answers its readiness probe, then times its removal. The lab is removed in
``finally`` whatever happens; the loop is bounded by --runs and --max-seconds. Figures
depend on the machine (ours: 2 cores); they are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from collections.abc import Sequence

from lab.config import LabConfig
from lab.engine import Engine
from lab.errors import LabError
from lab.topology.images import BOOTSTRAPPED_BASE, ROLES, ensure_base, ensure_images
from lab.topology.lab import Lab

MB = 1_000_000  # Docker reports sizes in decimal megabytes


def spread(values: Sequence[float]) -> str:
    """``median m (min a, max b)`` of some seconds, or ``-`` for none."""
    if not values:
        return "-"
    return (f"median {statistics.median(values):.2f} s (min {min(values):.2f}, "
            f"max {max(values):.2f}, n={len(values)})")


def base_reference(engine: Engine, config: LabConfig) -> str | None:
    """The base image the builds use, if it is present (same rule as ``planned_references``)."""
    for reference in (config.build.base_image, BOOTSTRAPPED_BASE):
        if engine.image_id(reference):
            return reference
    return None


def bench_base(engine: Engine, config: LabConfig) -> str:
    """Make sure the base image exists; say whether it was present and what fetching it took."""
    present = base_reference(engine, config)
    if present is not None:
        print(f"base image: {present} (present; not part of the build times)")
        return present
    print("base image: missing; pulling or bootstrapping it first (timed separately)")
    started = time.monotonic()
    reference = ensure_base(engine, config.build, lambda text: print(f"  {text}"))
    print(f"base image: {reference} fetched in {time.monotonic() - started:.1f} s")
    return reference


def bench_cold(engine: Engine, config: LabConfig) -> dict[str, str]:
    """Build every role without the layer cache; print per-role and total seconds."""
    print(f"\ncold build of {len(ROLES)} roles (no layer cache, 3 builds at a time) ...", flush=True)
    started = time.monotonic()
    refs = ensure_images(engine, config.build, force=True)
    total = time.monotonic() - started
    for role in ROLES:
        print(f"  {role:<10} {refs[role].seconds:7.1f} s   {refs[role].reference}")
    print(f"  {'total':<10} {total:7.1f} s   wall time (builds overlap, so the roles sum to more)")
    return {role: ref.reference for role, ref in refs.items()}


def bench_warm(engine: Engine, config: LabConfig, runs: int, max_seconds: float) -> None:
    """Start and remove the lab ``runs`` times; print each run and the spread."""
    print(f"\nwarm `lab up` to all-ready and `lab down`, lab {config.name!r}, {runs} run(s)")
    ups: list[float] = []
    downs: list[float] = []
    deadline = time.monotonic() + max_seconds
    lab = Lab(engine, config)
    try:
        for index in range(runs):
            if time.monotonic() > deadline:
                print(f"  stopped after {index} run(s): --max-seconds {max_seconds:g} reached")
                break
            lab = Lab(engine, config)  # fresh secrets each run, as a new `lab up` would have
            started = time.monotonic()
            result = lab.up(ephemeral=True)
            up_s = time.monotonic() - started
            started = time.monotonic()
            removed = lab.down()
            down_s = time.monotonic() - started
            ups.append(up_s)
            downs.append(down_s)
            extra = f"; built {', '.join(result.images_built)}" if result.images_built else ""
            print(f"  run {index + 1}: up {up_s:6.2f} s   down {down_s:5.2f} s   "
                  f"({len(removed.containers)} containers, {len(removed.networks)} network){extra}",
                  flush=True)
    finally:
        lab.down()
    print(f"  up   {spread(ups)}")
    print(f"  down {spread(downs)}")


def bench_disk(engine: Engine, base: str, images: dict[str, str]) -> None:
    """Print each image's size, and what the roles add on top of the shared base."""
    base_size = engine.image_size(base)
    print("\ndisk used by the images (Docker's size: each includes the shared base layers)")
    print(f"  {'base':<10} {base_size / MB:8.1f} MB   {base}")
    unique = base_size
    for role in ROLES:
        size = engine.image_size(images[role])
        unique += max(0, size - base_size)
        print(f"  {role:<10} {size / MB:8.1f} MB   ({(size - base_size) / MB:+7.1f} MB over the base)"
              f"   {images[role]}")
    print(f"  {'total':<10} {unique / MB:8.1f} MB   base once plus each role's own layers")


def _on_sigterm(signum: int, frame: object) -> None:
    # SIGTERM takes the Ctrl-C path, so the lab is removed in `finally`.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="warm up/down repetitions (default 5)")
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold image build")
    parser.add_argument("--max-seconds", type=float, default=900.0,
                        help="start no warm run after this many seconds (default 900)")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 50:
        print("error: --runs in [1, 50]", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    config = LabConfig(name=f"bench-{os.getpid()}")
    engine = Engine.connect()
    try:
        print(f"machine: {os.cpu_count()} cores")
        base = bench_base(engine, config)
        if args.skip_cold:
            refs = ensure_images(engine, config.build)
            built = [role for role, ref in refs.items() if ref.built]
            print("cold build: skipped" + (f" (built missing {', '.join(built)} first)" if built else ""))
            images = {role: ref.reference for role, ref in refs.items()}
        else:
            images = bench_cold(engine, config)
        bench_warm(engine, config, args.runs, min(args.max_seconds, 3600.0))
        bench_disk(engine, base, images)
    except LabError as error:
        print(f"{type(error).__name__}: {error.render()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
