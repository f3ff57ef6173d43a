"""report.html of a small run and of a 10-minute, 120,000-request run: size and load time.

    python bench/report.py [--loads 3] [--keep DIR]

Builds two synthetic results shaped like a failover run (kill backend-1 at 1/5 of the run,
restart it 30 s later; the ejection and re-admission are in the traffic and the checks):
"small" (20 s at 20 req/s, 400 requests, like `lab run failover`) and "large" (600 s at
200 req/s, 120,000 requests and as many access-log lines). Each is written as result.json
and rendered with lab.report.html, as `lab run` does. Then headless Chromium (Debian's
chromium and chromedriver, through Selenium) opens each report --loads times, alternating
small and large, with a fresh browser profile; a load is timed from the navigation's start
to the second animation frame after the load event (the page is laid out and painted).

Prints per run: requests, points drawn one by one, aggregate cells, result.json and
report.html sizes, render time, and the median (min-max) load time, beside the targets
(report.html < 5 MB, load < 2 s for the large run) and the 1-minute load average. Nothing
is asserted: the figures depend on the machine (ours: 2 cores shared). Exit 0 when every
figure was measured, 2 when the browser could not start.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from lab.faults import FAULTS
from lab.history import (
    AccessLogEntry,
    FaultEvent,
    FaultPhase,
    History,
    Mark,
    Outcome,
    RequestRecord,
)
from lab.report import html

KILL = FAULTS.get("kill").effect

TARGET_BYTES = 5 * 1024 * 1024
TARGET_LOAD_S = 2.0
T0 = 1_800_000_000.0
BACKENDS = ("backend-1", "backend-2", "backend-3")
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1300,900")


def synthetic_history(duration_s: float, rate: float, seed: int) -> tuple[History, dict]:
    """A failover-shaped history: round robin, backend-1 killed at 1/5 of the run for 30 s
    (at most a third of the run); NGINX ejects it after three 1 s connect timeouts and lets
    it back 10 s after the restart. Returns the history and the moments the checks measure."""
    rng = random.Random(seed)
    inject = T0 + duration_s / 5
    heal = inject + min(30.0, duration_s / 3)
    ejected_at = inject + 1.2
    back_at = heal + 10.0
    history = History()
    history.marks.append(Mark("start", T0 - 0.1))
    history.faults += [
        FaultEvent("kill", "backend-1", FaultPhase.INJECT, inject, inject - 0.1, "SIGKILL", KILL),
        FaultEvent("kill", "backend-1", FaultPhase.HEAL, heal, heal - 0.4, "started", KILL)]
    for i in range(int(duration_s * rate)):
        at = T0 + i / rate
        backend = BACKENDS[i % 3]
        turn = i + 1
        latency = rng.lognormvariate(math.log(0.004), 0.45)
        tried = [backend]
        if backend == "backend-1" and inject <= at < back_at:
            if at >= ejected_at:  # ejected: round robin skips it
                backend = BACKENDS[1 + turn % 2]
                tried = [backend]
            else:  # one failed try (the connect timeout), then the next backend
                backend = BACKENDS[1 + turn % 2]
                tried = ["backend-1", backend]
                latency += 1.0
        outcome, status, answer = Outcome.OK, 200, backend
        roll = rng.random()
        if roll < 0.0005:
            outcome, status, answer = Outcome.FAIL, 502, None
        elif roll < 0.0008:
            outcome, status, answer, latency = Outcome.UNKNOWN, None, None, None
        history.requests.append(RequestRecord(
            id=i, client="reads", method="GET", path="/health", intended_at=at,
            sent_at=at + 0.0002, latency_s=latency, status=status, backend=answer,
            outcome=outcome, error="timeout" if latency is None else None, request_id=f"r-{i}"))
        if latency is not None:
            history.access_log.append(AccessLogEntry(
                msec=at + latency, request_time_s=latency, method="GET", uri="/health",
                status=status or 200, upstream_addrs=tuple(f"{b}:8000" for b in tried),
                upstream_backends=tuple(tried),
                upstream_statuses=tuple("504" if b == "backend-1" and len(tried) > 1 else "200"
                                        for b in tried),
                upstream_times_s=tuple(1.0 if len(tried) > 1 and b == "backend-1" else latency
                                       for b in tried),
                limit_req_status="-", remote_addr="172.30.0.1", request_id=f"r-{i}"))
    history.marks.append(Mark("ready:backend-1", heal + 1.5))
    history.marks.append(Mark("end", T0 + duration_s))
    return history, {"ejection_s": ejected_at - inject, "readmission_s": back_at - heal}


def synthetic_document(duration_s: float, rate: float, seed: int) -> dict:
    """result.json of a synthetic failover run (schema 1, with the objectives layer)."""
    history, measured = synthetic_history(duration_s, rate, seed)
    ok = sum(r.outcome is Outcome.OK for r in history.requests)
    check = {"conformance": "pass", "details": [], "objectives": []}
    return {
        "schema": 1, "scenario": "failover", "lab": "bench", "seed": seed,
        "description": "Synthetic failover run for bench/report.py: kill backend-1, restart it.",
        "started_at": T0 - 0.1, "finished_at": T0 + duration_s, "wall_time_s": duration_s,
        "lab_version": "bench", "verdict": "fail",
        "verdicts": {"conformance": "fail", "objectives": "pass"},
        "steps": ["wait", "inject kill on backend-1", "wait", "heal kill on backend-1"],
        "checks": [
            {**check, "name": "ejection", "label": "ejection", "verdict": "pass",
             "measured": f"last routed attempt +{measured['ejection_s']:.3f} s after the fault",
             "expected": "last attempt routed to backend-1 0.985-1.860 s after the fault",
             "derivation": "synthetic", "values": {"measured_s": measured["ejection_s"]}},
            {**check, "name": "readmission", "label": "readmission", "verdict": "pass",
             "measured": f"first 2xx from backend-1 {measured['readmission_s']:.3f} s after "
                         "the heal",
             "expected": "within 14.653 s of the heal", "derivation": "synthetic",
             "values": {"measured_s": measured["readmission_s"]}},
            {**check, "name": "availability", "label": "availability", "verdict": "fail",
             "conformance": "fail", "measured": f"{ok}/{len(history.requests)} ok",
             "expected": "success ratio >= 0.999", "derivation": "synthetic",
             "values": {"ok": ok, "total": len(history.requests)}},
        ],
        "objectives": [], "predictions": [], "faults": [], "notes": [],
        "durations": {"fail_timeout": 10.0, "connect_timeout": 1.0, "rate": rate},
        "history": asdict(history),
    }


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='bench-report-chromium-')}")
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(driver), options=options)


_PAINTED = """
const done = arguments[arguments.length - 1];
requestAnimationFrame(() => requestAnimationFrame(() => {
  const nav = performance.getEntriesByType('navigation')[0];
  done([nav.loadEventEnd, performance.now()]);
}));
"""


def load_seconds(driver, path: Path) -> tuple[float, float]:
    """(load event, painted) in seconds from the navigation's start, for one fresh load."""
    driver.get("about:blank")
    driver.get(path.resolve().as_uri())
    load_ms, painted_ms = driver.execute_async_script(_PAINTED)
    return load_ms / 1000, painted_ms / 1000


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}) s"


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.2f} MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=3, help="loads per report (default 3)")
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-report-"))
    runs = {"small": (20.0, 20.0), "large": (600.0, 200.0)}
    figures: dict[str, dict] = {}
    for name, (duration, rate) in runs.items():
        directory = root / name
        directory.mkdir(parents=True, exist_ok=True)
        document = synthetic_document(duration, rate, seed=1)
        (directory / "result.json").write_text(json.dumps(document, indent=1))
        started = time.perf_counter()
        page = html.write(directory)
        render_s = time.perf_counter() - started
        text = page.read_text()
        figures[name] = {"requests": len(document["history"]["requests"]),
                         "points": len(re.findall(r'class="req[ "]', text)),
                         "cells": text.count('class="cell '),
                         "json": (directory / "result.json").stat().st_size,
                         "html": page.stat().st_size, "render_s": render_s, "page": page,
                         "loads": []}
    try:
        driver = _browser()
    except Exception as exc:  # noqa: BLE001 - any browser failure ends the bench
        print(f"bench: headless chromium did not start: {exc}", file=sys.stderr)
        return 2
    try:
        for _ in range(args.loads):
            for name in runs:  # alternate, so both see the same machine
                figures[name]["loads"].append(load_seconds(driver, figures[name]["page"]))
    finally:
        driver.quit()
    print(f"load average (1 min) {os.getloadavg()[0]:.2f}; {args.loads} loads each, "
          f"targets for the large run: report.html < {_mb(TARGET_BYTES)}, "
          f"load < {TARGET_LOAD_S:g} s")
    print(f"{'run':6} {'requests':>9} {'points':>7} {'cells':>6} {'result.json':>12} "
          f"{'report.html':>12} {'render':>8} {'load event':>18} {'painted':>18}")
    for name, f in figures.items():
        loads = [load for load, _ in f["loads"]]
        painted = [p for _, p in f["loads"]]
        print(f"{name:6} {f['requests']:>9,} {f['points']:>7,} {f['cells']:>6,} "
              f"{_mb(f['json']):>12} {_mb(f['html']):>12} {f['render_s']:>6.2f} s "
              f"{_spread(loads):>18} {_spread(painted):>18}")
    large = figures["large"]
    print(f"large: report.html {_mb(large['html'])} (target < {_mb(TARGET_BYTES)}), painted "
          f"{statistics.median(p for _, p in large['loads']):.2f} s (target < {TARGET_LOAD_S:g} s)")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"kept: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
