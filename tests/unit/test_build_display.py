"""The build progress display in a real terminal (tmux): one line per image, as builds report."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import time
    from lab.cli.topology import BuildDisplay
    from lab.topology.images import DEPS_PREFIX

    display = BuildDisplay()
    with display.live:
        for role in ("backend", "postgres", "redis"):
            display.on_line(role, "queued")
        display.on_line("backend", "starting")
        display.on_line("backend", DEPS_PREFIX + "Step 3/7 : RUN apt-get install python3")
        display.on_line("postgres", "starting")
        display.on_line("postgres", "Step 4/12 : RUN initdb [1/2]")
        display.on_line("postgres", "some output that is not a step")
        time.sleep(1.5)
        open({marker!r}, "w").close()
        time.sleep(30)
""")


def test_one_line_per_image_with_its_state(tmp_path: Path) -> None:
    """Queued images, the step a build is at (a dependencies image's marked so), a moving clock;
    build output that is not a step leaves the line alone and markup-like text prints as is."""
    if shutil.which("tmux") is None:
        pytest.fail("this test needs tmux (apt-get install tmux)", pytrace=False)
    marker = tmp_path / "shown"
    script = tmp_path / "display.py"
    script.write_text(SCRIPT.format(marker=str(marker)), encoding="utf-8")
    session = f"lab-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "20",
                    f"{sys.executable} {script}"], check=True)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), "the display script never got that far"
        screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], check=True,
                                capture_output=True, text=True).stdout
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    lines = {line.split()[0]: line for line in screen.splitlines() if line.strip()}
    assert "dependencies: Step 3/7 : RUN apt-get install python3" in lines["backend"], screen
    assert "Step 4/12 : RUN initdb [1/2]" in lines["postgres"], screen
    assert lines["redis"].split()[-1] == "queued", screen
    clock = lines["postgres"].split()[1]
    assert float(clock) >= 1.0, screen  # redrawn while nothing new arrives
