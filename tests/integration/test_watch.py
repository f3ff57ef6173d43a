"""`lab watch`, `lab break`, `lab heal` and `lab run --step` as a trainer uses them: in real
terminals (tmux), on a running lab."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from tmux_terminal import LAB, Tmux, lab_command, session_name

from lab.engine import LABEL_KIND, LABEL_LAB
from lab.expectations import FailureMode, worst_case_ejection_s
from lab.topology.lab import Lab
from lab.topology.nginx_policy import parse_nginx_policy
from lab.watch.model import Snapshot

RATE = 20.0


def probe_row(screen: str, node: str) -> tuple[int, int] | None:
    """(share %, ok answers in the last second) of a backend in the probe panel."""
    match = re.search(rf"│ {node}\s+(\d+)%\s+(\d+)\s", screen)
    return (int(match.group(1)), int(match.group(2))) if match else None


def node_row(screen: str, node: str) -> tuple[str, str] | None:
    """(Docker state, ready) of a node in the nodes panel."""
    states = "running|exited|paused|created|dead|missing"
    match = re.search(rf"│ {node}\s+({states})\s+(yes|no|\.\.\.)", screen)
    return (match.group(1), match.group(2)) if match else None


def ejected(screen: str, node: str) -> float | None:
    match = re.search(rf"│ {node}\s.*ejected \+([\d.]+) s after the fault", screen)
    return float(match.group(1)) if match else None


def test_watch_shows_a_kill_the_ejection_and_the_heal(running_lab: Lab, tmp_path: Path) -> None:
    """Three backends share the traffic; `lab break backend-1 kill` in another terminal shows
    backend-1 exited and its answers stop within the ejection window; `lab heal --all` brings
    it back; `q` leaves nothing behind."""
    lab = running_lab
    policy = parse_nginx_policy(lab.nginx_conf()).upstream
    bound, _ = worst_case_ejection_s(policy, FailureMode.UNREACHABLE, RATE)
    tmux = Tmux(session_name("watch"))
    try:
        watch = tmux.run(lab_command("watch", "--name", lab.name, "--rate", f"{RATE:g}",
                                     "--duration", "5m"), tmp_path)
        shares, _ = tmux.wait_for(
            watch, lambda s: (all((row := probe_row(s, b)) and 20 <= row[0] <= 47 and row[1] > 0
                                  for b in ("backend-1", "backend-2", "backend-3"))
                              and node_row(s, "backend-1") == ("running", "yes")),
            60, "three backends sharing the traffic, every node ready")
        assert shares

        other = tmux.run(lab_command("break", "backend-1", "kill", "--name", lab.name), tmp_path)
        tmux.wait_for(other, lambda s: "undo: lab heal backend-1" in s, 30, "the break done")
        broken = time.monotonic()
        _, seen_down = tmux.wait_for(
            watch, lambda s: node_row(s, "backend-1") == ("exited", "no"), 10,
            "backend-1 exited in the nodes panel")
        tmux.wait_for(watch, lambda s: (probe_row(s, "backend-1") or (1, 1))[1] == 0, bound + 10,
                      "backend-1 answering nothing")
        zero_after = time.monotonic() - broken
        # Its answers stop at the kill; the per-second count shows it from the next whole second
        # (one more redraw): within the ejection window plus that second.
        assert zero_after <= bound + 2.5, (zero_after, bound)
        measured, _ = tmux.wait_for(watch, lambda s: ejected(s, "backend-1"), 30,
                                    "NGINX's view: backend-1 ejected")
        assert measured <= bound + 0.5, (measured, bound)   # the ejection check's tolerance
        tmux.wait_for(watch, lambda s: "kill" in s and "in place" in s, 5, "the fault listed")
        print(f"\nwatch: backend-1 exited on screen {seen_down:.2f} s after `lab break` "
              f"returned, 0 answers/s after {zero_after:.2f} s, ejected +{measured:.2f} s "
              f"(bound {bound:.2f} s)")

        healer = tmux.run(lab_command("heal", "--all", "--name", lab.name), tmp_path)
        assert tmux.exited(healer, 90) == 0
        assert "backend-1: healed kill" in tmux.screen(healer)
        readmit = policy.fail_timeout_s + policy.connect_timeout_s + 15
        tmux.wait_for(watch, lambda s: node_row(s, "backend-1") == ("running", "yes")
                      and (probe_row(s, "backend-1") or (0, 0))[1] > 0, readmit,
                      "backend-1 back in rotation")

        tmux.send(watch, "q")
        assert tmux.exited(watch, 15) == 0
        assert re.search(r"lab watch: \d+ redraws in \d+ s", tmux.screen(watch))
    finally:
        tmux.close()
    status = lab_status(lab, tmp_path)
    assert status["ready"], status
    left = [(i.name, i.labels.get(LABEL_KIND)) for i in
            lab.engine.list_containers({LABEL_LAB: lab.name}) if i.labels.get(LABEL_KIND) != "node"]
    assert left == [], left


def lab_status(lab: Lab, cwd: Path) -> dict:
    """`lab status --json`, as a person would run it after closing the watch."""
    result = subprocess.run([*LAB, "status", "--json", "--name", lab.name], cwd=cwd,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_json_snapshots_are_typed_and_bounded(running_lab: Lab, tmp_path: Path) -> None:
    """--json prints one snapshot a second and stops by itself at --duration."""
    started = time.monotonic()
    result = subprocess.run([*LAB, "watch", "--name", running_lab.name, "--json", "--duration",
                             "4s", "--interval", "1s"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, check=False)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    snapshots = [Snapshot.model_validate_json(line) for line in result.stdout.splitlines()]
    assert 3 <= len(snapshots) <= 5 and elapsed < 20
    last = snapshots[-1]
    assert last.lab == running_lab.name and {n.name for n in last.nodes} == set(running_lab.roles)
    assert last.probe.ok > 0 and last.stub_status is not None and last.pool is not None
    assert sum(b.answered for b in last.probe.backends) == last.probe.ok


SHORT = """\
name: short-step
description: >
  Reads through NGINX at 30 requests per second while nothing is broken, in three short
  waits: each backend answers a third.
traffic:
  - {client: reads, rate: 70, path: /health}
steps:
  - wait: 2
  - wait: 2
  - wait: 2
checks:
  - distribution: {client: reads}
  - availability: {client: reads, slo: 1.0}
"""


def _verdict(report_dir: Path) -> str:
    (result,) = report_dir.glob("*/result.json")
    return json.loads(result.read_text())["verdict"]


def test_a_step_through_run_has_the_verdict_of_a_normal_one(running_lab: Lab,
                                                             tmp_path: Path) -> None:
    """`lab run --step` says each step and waits for Enter; driven with send-keys, it ends
    with the verdict a run without --step gives."""
    scenario = tmp_path / "short.yaml"
    scenario.write_text(SHORT)
    tmux = Tmux(session_name("step"))
    try:
        normal = tmux.run(lab_command("run", str(scenario), "--name", running_lab.name,
                                      "--report-dir", str(tmp_path / "normal")), tmp_path)
        normal_rc = tmux.exited(normal, 180)
        stepped = tmux.run(lab_command("run", str(scenario), "--step", "--name",
                                       running_lab.name, "--report-dir",
                                       str(tmp_path / "stepped")), tmp_path)
        tmux.wait_for(stepped, lambda s: "expects: backend-1 0.3333" in s, 60, "the plan")
        for index in (1, 2, 3):
            tmux.wait_for(stepped, lambda s, i=index: f"step {i}/3: wait 2 s" in s, 60,
                          f"step {index}'s prompt")
            time.sleep(1.0)          # the class looks at it; the traffic flows meanwhile
            tmux.send(stepped, "Enter")
        stepped_rc = tmux.exited(stepped, 180)
        assert "short-step: pass" in tmux.screen(stepped)
    finally:
        tmux.close()
    stepped_verdict, normal_verdict = _verdict(tmp_path / "stepped"), _verdict(tmp_path / "normal")
    assert (stepped_rc, stepped_verdict) == (normal_rc, normal_verdict)
    assert normal_rc == 0
