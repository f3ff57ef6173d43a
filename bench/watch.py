"""`lab watch` in a real terminal: its CPU use, its redraw rate, and how soon a break shows.

    python bench/watch.py [--seconds 60] [--rate 20] [--name LAB]

Starts a lab (``bench-<pid>``, removed in ``finally``) unless ``--name`` names a running one,
and runs ``lab watch`` in a tmux pane of its own (a private tmux socket, 200x60). Then:

- **idle**: ``--seconds`` with the lab untouched; the watch's CPU time from
  ``/proc/<pid>/stat`` (utime + stime of every thread) over wall time, in % of one core;
- **under break**: ``--seconds`` of ``lab break backend-1 kill`` / ``lab heal backend-1`` in
  turn; the same CPU figure, and for each break the delay from ``lab break`` returning to the
  pane showing backend-1 ``exited`` (capture-pane every 50 ms), and for each heal the delay to
  ``running``;
- **redraws**: ``q`` ends the watch, which prints how often it redrew.

Side by side with the anchors: under 20% of one core, at least 2 redraws a second. Figures
depend on the machine (ours: 2 cores, shared): the load average is printed with them. Every
loop is bounded by --seconds and a count; exit 0 when the measurement completed.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lab.config import LabConfig
from lab.engine import Engine
from lab.topology.lab import Lab

CPU_ANCHOR = 20.0        # % of one core
REDRAW_ANCHOR = 2.0      # per second
LAB = (sys.executable, "-c", "from lab.cli.app import main; main()")
TICKS = os.sysconf("SC_CLK_TCK")


class Pane:
    def __init__(self, socket: str, command: str):
        self.socket = socket
        line = f"stty cols 200 rows 60; {command}; echo EXITED rc=$?; sleep 300"
        self.id = self._tmux("new-session", "-d", "-P", "-F", "#{pane_id}", "-x", "200", "-y",
                             "60", line).strip()

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", self.id)

    def send(self, key: str) -> None:
        self._tmux("send-keys", "-t", self.id, key)

    def shell_pid(self) -> int:
        return int(self._tmux("display", "-p", "-t", self.id, "#{pane_pid}").strip())

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=10, check=False)


def child_of(pid: int) -> int:
    """The process the pane's shell runs (the watch)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                return int(entry.name)
    raise LookupError(f"no child of {pid}")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS     # utime + stime, every thread


def node_state(screen: str, node: str) -> str | None:
    match = re.search(rf"│ {node}\s+(running|exited|paused|created)\s", screen)
    return match.group(1) if match else None


def wait_screen(pane: Pane, node: str, state: str, timeout_s: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if node_state(pane.screen(), node) == state:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def lab_cli(name: str, *args: str) -> None:
    subprocess.run([*LAB, *args, "--name", name], capture_output=True, timeout=120, check=True)


def timed_break(pane: Pane, name: str) -> tuple[float | None, float | None]:
    """`lab break backend-1 kill`: seconds from its start, and from its return, until the pane
    shows backend-1 exited (negative: shown before the command returned)."""
    started = time.monotonic()
    command = subprocess.Popen([*LAB, "break", "backend-1", "kill", "--name", name],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    returned = seen = None
    while time.monotonic() - started < 20 and (returned is None or seen is None):
        if returned is None and command.poll() is not None:
            returned = time.monotonic()
        if seen is None and node_state(pane.screen(), "backend-1") == "exited":
            seen = time.monotonic()
        time.sleep(0.05)
    command.wait(10)
    if seen is None or returned is None:
        return None, None
    return seen - started, seen - returned


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--name", help="a running lab to watch (default: start bench-<pid>)")
    args = parser.parse_args(argv)
    seconds = max(10.0, min(args.seconds, 600.0))
    name = args.name or f"bench-{os.getpid()}"
    engine = Engine.connect()
    started_lab = None
    if args.name is None:
        started_lab = Lab(engine, LabConfig(name=name))
        started_lab.up(ephemeral=True)
    pane = None
    try:
        duration = f"{int(3 * seconds + 120)}s"
        pane = Pane(f"bench-watch-{os.getpid()}", shlex.join(
            [*LAB, "watch", "--name", name, "--rate", f"{args.rate:g}", "--duration", duration]))
        if wait_screen(pane, "backend-1", "running", 60) is None:
            print("the watch did not show backend-1 within 60 s:\n" + pane.screen())
            return 2
        time.sleep(5)                       # past the first readings
        pid = child_of(pane.shell_pid())
        print(f"load average before: {load()}")

        t0, c0 = time.monotonic(), cpu_s(pid)
        time.sleep(seconds)
        idle = 100 * (cpu_s(pid) - c0) / (time.monotonic() - t0)

        shown: list[tuple[float | None, float | None]] = []
        back: list[float | None] = []
        t0, c0 = time.monotonic(), cpu_s(pid)
        for _ in range(20):
            if time.monotonic() - t0 > seconds - 20:
                break
            shown.append(timed_break(pane, name))
            time.sleep(5)
            lab_cli(name, "heal", "backend-1")
            back.append(wait_screen(pane, "backend-1", "running", 10))
            time.sleep(5)
        left = seconds - (time.monotonic() - t0)
        if left > 0:
            time.sleep(left)
        broken = 100 * (cpu_s(pid) - c0) / (time.monotonic() - t0)
        print(f"load average after: {load()}")

        pane.send("q")
        deadline = time.monotonic() + 20
        match = None
        while match is None and time.monotonic() < deadline:
            match = re.search(r"lab watch: (\d+) redraws in (\d+) s", pane.screen())
            time.sleep(0.2)
        redraws = int(match.group(1)) / int(match.group(2)) if match else None

        def spread(values: list[float | None]) -> str:
            got = [v for v in values if v is not None]
            missed = len(values) - len(got)
            if not got:
                return "none seen"
            return (f"median {statistics.median(got):.2f} s, min {min(got):.2f}, max "
                    f"{max(got):.2f} ({len(got)} of {len(values)}"
                    + (f", {missed} not seen in 10 s" if missed else "") + ")")

        print(f"{'':28}{'measured':>12}   anchor")
        print(f"{'CPU, lab idle':28}{idle:>10.1f} %   < {CPU_ANCHOR:g} % of one core")
        print(f"{'CPU, breaks and heals':28}{broken:>10.1f} %   < {CPU_ANCHOR:g} % of one core")
        print(f"{'redraws':28}{redraws or 0:>10.2f}/s   >= {REDRAW_ANCHOR:g}/s")
        print(f"`lab break` started -> screen shows exited: {spread([a for a, _ in shown])}")
        print(f"`lab break` returned -> screen shows exited: {spread([b for _, b in shown])}")
        print(f"heal returned -> screen shows running: {spread(back)}")
        print(f"({seconds:g} s per phase, probe stream {args.rate:g} req/s)")
        return 0
    finally:
        if pane is not None:
            pane.close()
        subprocess.run([*LAB, "heal", "--all", "--name", name], capture_output=True,
                       timeout=120, check=False)
        if started_lab is not None:
            started_lab.down()


if __name__ == "__main__":
    sys.exit(main())
