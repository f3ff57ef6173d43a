"""The lab on configurations other people wrote: `lab lint` and `lab run failover` on every
NGINX configuration of the corpus (tests/corpus/), one row each.

For each entry the lab is expected to run: its shapes, the lint findings at failover's
traffic, what the configuration predicts (ejection, re-admission, availability) against what
the run measured, whether each prediction with a range held (a miss is the lab's model wrong),
and the verdict of both layers (conformance must pass on a correct NGINX; objectives may fail,
which is the point of a bad configuration). An entry the lab should
refuse must be refused before anything starts, with one message (exit 2).

    python bench/corpus.py                 # every entry (about 40-70 s each that runs)
    python bench/corpus.py --only mattermost,ip-hash-trio
    python bench/corpus.py --lint-only     # no Docker: lint and explain only

Runs one lab at a time (`corpus-<pid>`), removes it after each entry, and prints a markdown
table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.corpus import entries


@dataclass
class Row:
    """One corpus entry's outcome."""

    name: str
    shapes: str
    outcome: str = ""
    lint: str = ""
    predicted: str = ""
    measured: str = ""
    held: str = ""
    conformance: str = ""
    objectives: str = ""
    seconds: float = 0.0


def _lab(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, check=False)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _message(text: str) -> str:
    """The lab's error message without its hint, on one line (a table cell): the problem and
    the lines it names."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(line for line in lines if not line.startswith("Hint:"))


def _lint(lab_toml: Path) -> tuple[int, str]:
    done = _lab("lint", "--config", str(lab_toml), "--json")
    if done.returncode == 2:
        return 2, _first_line(done.stderr or done.stdout)
    findings = json.loads(done.stdout).get("findings", [])
    names = sorted({f["rule"] for f in findings})
    return done.returncode, ", ".join(names) or "clean"


def _values(check: dict) -> dict[str, float]:
    values = check.get("values") or {}
    return values if isinstance(values, dict) else dict(values)


def _run(entry_lab: Path, name: str, report: Path) -> Row:
    row = Row(name, "")
    done = _lab("run", "failover", "--config", str(entry_lab), "--name", name,
                "--report-dir", str(report), timeout=900)
    results = sorted(report.glob("*/result.json"))
    if done.returncode == 2 or not results:
        row.outcome = "lab failed: " + _first_line(done.stderr or done.stdout)
        return row
    document = json.loads(results[-1].read_text())
    row.outcome = {0: "pass", 1: "fail"}.get(done.returncode, str(done.returncode))
    row.conformance = document["verdicts"]["conformance"]
    row.objectives = document["verdicts"]["objectives"]
    predicted = {p["objective"]: p["predicted"] for p in document.get("predictions", [])}
    row.predicted = "; ".join(f"{k} {predicted[k]}" for k in ("ejection", "readmission",
                                                                 "availability") if k in predicted)
    # Whether each prediction with a range held against the run (result.json's "held").
    row.held = "; ".join(f"{p['objective']} {'held' if p['held'] else 'MISSED'} "
                         f"({p['compared']})" for p in document.get("predictions", [])
                         if p.get("held") is not None) or "-"
    measured = []
    for check in document["checks"]:
        values = _values(check)
        if check["name"] == "ejection" and "measured_s" in values:
            measured.append(f"ejection {values['measured_s']:.2f} s")
        elif check["name"] == "ejection":
            measured.append("ejection none")
        if check["name"] == "readmission" and "measured_s" in values:
            measured.append(f"readmission {values['measured_s']:.2f} s")
        if check["name"] == "availability" and "ratio" in values:
            measured.append(f"availability {values['ratio']:.4f}")
        if check["conformance"] != "pass":
            measured.append(f"{check['label'] or check['name']} {check['conformance']}: "
                            f"{check['measured'][:80]}")
    row.measured = "; ".join(measured)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated entry names")
    parser.add_argument("--lint-only", action="store_true", help="no Docker: lint and explain")
    args = parser.parse_args()
    wanted = {n for n in args.only.split(",") if n}
    rows: list[Row] = []
    for entry in entries():
        if entry.kind != "nginx" or (wanted and entry.name not in wanted):
            continue
        started = time.monotonic()
        assert entry.lab is not None
        row = Row(entry.name, ", ".join(sorted(entry.shapes)))
        code, lint = _lint(entry.lab)
        explained = _lab("explain", "failover", "--config", str(entry.lab))
        if entry.refused:
            refused = code == 2 or explained.returncode == 2
            row.outcome = ("refused: " + _message(explained.stderr or lint) if refused
                           else "NOT refused (expected: " + entry.expect + ")")
        elif code == 2 or explained.returncode == 2:
            row.outcome = "refused, but should run: " + _first_line(explained.stderr or lint)
        else:
            row.lint = lint
            if not args.lint_only:
                with tempfile.TemporaryDirectory(prefix="corpus-") as report:
                    ran = _run(entry.lab, f"corpus-{os.getpid()}", Path(report))
                row.outcome, row.predicted, row.measured = ran.outcome, ran.predicted, \
                    ran.measured
                row.held = ran.held
                row.conformance, row.objectives = ran.conformance, ran.objectives
            else:
                row.outcome = "lint and explain ok"
        row.seconds = time.monotonic() - started
        rows.append(row)
        print(f"{row.name}: {row.outcome} ({row.seconds:.0f} s) conformance "
              f"{row.conformance or '-'}, objectives {row.objectives or '-'}; lint: "
              f"{row.lint or '-'}", flush=True)
    print()
    print("| config | shapes | outcome | lint findings | predicted | measured | prediction held "
          "| conformance | objectives |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row.name} | {row.shapes} | {row.outcome} | {row.lint} | {row.predicted} | "
              f"{row.measured} | {row.held} | {row.conformance} | {row.objectives} |")
    # Conformance "unknown" says why (a hash key the traffic never varies): reported, not wrong.
    wrong = [r for r in rows if r.outcome.startswith(("NOT refused", "refused, but", "lab failed"))
             or r.conformance == "fail" or "MISSED" in r.held]
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
