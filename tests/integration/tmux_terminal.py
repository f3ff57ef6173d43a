"""A real terminal for tests of live views: tmux on a private socket, send-keys and
capture-pane, and the `lab` command as a person types it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

# The lab CLI of this interpreter, wherever its entry script was installed.
LAB = (sys.executable, "-c", "from lab.cli.app import main; main()")


def lab_command(*args: str) -> str:
    """A shell command line running `lab ARGS` with this interpreter."""
    return shlex.join([*LAB, *args])


class Tmux:
    """One tmux server of our own (its own socket), removed by ``close``."""

    def __init__(self, name: str, width: int = 200, height: int = 60):
        if shutil.which("tmux") is None:
            pytest.fail("terminal tests need tmux (apt-get install tmux)", pytrace=False)
        self.socket = name
        self.width, self.height = width, height
        self.started = False

    def _tmux(self, *args: str) -> str:
        result = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                                text=True, timeout=10, check=True)
        return result.stdout

    def run(self, command: str, cwd: Path) -> str:
        """A new pane running ``command`` (a shell line) in ``cwd``; its pane id. When the
        command ends the pane stays, showing "EXITED rc=N"."""
        # The pane's size, said to its terminal before the command starts: a program that reads
        # it during tmux's own resize of a new session could otherwise see 80x24 and keep it.
        line = (f"stty cols {self.width} rows {self.height}; cd {shlex.quote(str(cwd))} && "
                f"{command}; echo EXITED rc=$?; sleep 600")
        if not self.started:
            self.started = True
            return self._tmux("new-session", "-d", "-P", "-F", "#{pane_id}", "-x",
                              str(self.width), "-y", str(self.height), line).strip()
        return self._tmux("new-window", "-d", "-P", "-F", "#{pane_id}", line).strip()

    def screen(self, pane: str) -> str:
        return self._tmux("capture-pane", "-p", "-t", pane)

    def send(self, pane: str, *keys: str) -> None:
        self._tmux("send-keys", "-t", pane, *keys)

    def wait_for(self, pane: str, found: Callable[[str], object], timeout_s: float,
                 what: str, poll_s: float = 0.1) -> tuple[object, float]:
        """Poll the pane until ``found(screen)`` is truthy; (its value, seconds waited)."""
        started = time.monotonic()
        screen = ""
        while time.monotonic() - started < timeout_s:
            screen = self.screen(pane)
            value = found(screen)
            if value:
                return value, time.monotonic() - started
            time.sleep(poll_s)
        size = self._tmux("display", "-p", "-t", pane, "#{window_width}x#{window_height}")
        raise AssertionError(f"{what}: not on screen within {timeout_s:g} s; last screen "
                             f"({size.strip()}):\n{screen}")

    def exited(self, pane: str, timeout_s: float) -> int:
        """Wait for the pane's command to end; its exit code."""
        match, _ = self.wait_for(pane, lambda s: re.search(r"EXITED rc=(\d+)", s), timeout_s,
                                 "the command's end")
        return int(match.group(1))  # type: ignore[union-attr]

    def close(self) -> None:
        if self.started:
            subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                           timeout=10, check=False)


def session_name(what: str) -> str:
    return f"lab-test-{what}-{os.getpid()}"
