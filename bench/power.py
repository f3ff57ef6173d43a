"""The power of the failover checks: how often a one-step wrong NGINX is caught.

Plays each shipped failover scenario's traffic and fault on the simulated NGINX of
``tests/unit/nginx_sim.py`` (NGINX's own round robin, counters, timers and log), once as the
configuration says and once per one-step change (max_fails +-1, fail_timeout +-2 s, the
scenario's timeout +25 %), judges every run with the real ejection, readmission, availability
and latency checks against the unchanged configuration, and writes the detection table to
docs/power.md (``--write``) or prints it.

    python bench/power.py --runs 200 --write

No Docker: pure computation, about 0.15 s a run on one core.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "unit"))
sys.path.insert(0, str(ROOT))

from power_cases import SHAPES, detected, trial

DOC = ROOT / "docs" / "power.md"
BEGIN, END = "<!-- power:begin -->", "<!-- power:end -->"


def table(runs: int) -> list[str]:
    """The detection table's markdown rows, one per scenario and change."""
    rows = ["| scenario | NGINX runs | runs | caught | rate | caught by |",
            "|---|---|---|---|---|---|"]
    for shape in SHAPES:
        for change in (None, *shape.changes):
            by: collections.Counter[str] = collections.Counter()
            caught = 0
            for seed in range(runs):
                failing = detected(trial(shape, change, seed))
                caught += bool(failing)
                by.update(failing)
            label = change or "the configuration (honest baseline)"
            rate = (runs - caught) / runs if change is None else caught / runs
            shown = (f"passed {runs - caught}" if change is None else str(caught))
            checks = ", ".join(f"{name} {n}" for name, n in by.most_common()) or "-"
            rows.append(f"| {shape.name} | {label} | {runs} | {shown} | {rate:.1%} | "
                        f"{checks} |")
            print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="seeded runs per row")
    parser.add_argument("--write", action="store_true", help="write the table into " + str(DOC))
    args = parser.parse_args()
    started = time.monotonic()
    rows = table(args.runs)
    print(f"{time.monotonic() - started:.0f} s")
    if args.write:
        text = DOC.read_text(encoding="utf-8")
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        DOC.write_text(head + BEGIN + "\n" + "\n".join(rows) + "\n" + END + tail,
                       encoding="utf-8")
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
