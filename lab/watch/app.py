"""The Textual app of ``lab watch``: the panels of ``lab.watch.panels`` on one screen, redrawn
about twice a second from the sampler's latest snapshot (terminal modes, keys, resizing and a
clean exit are Textual's)."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Static

from lab.expectations import UpstreamPolicy
from lab.watch.panels import (
    errors_line,
    faults_panel,
    locks_panel,
    nginx_panel,
    nodes_panel,
    pool_panel,
    probe_panel,
    stub_panel,
    title_line,
)
from lab.watch.sampler import LiveView

REDRAW_S = 0.45          # a little more than twice a second


class WatchApp(App[None]):
    """The live view; ``q`` or Ctrl-C quits, and it ends by itself with the probe stream."""

    CSS = """
    Screen { layout: vertical; overflow-y: auto; }
    Horizontal { height: auto; }
    .panel { border: round $accent; padding: 0 1; height: auto; width: 1fr; }
    #nginx, #nodes { width: 3fr; }
    #stub, #pool { width: 2fr; }
    #faults, #locks { width: 3fr; }
    #title, #errors { height: auto; padding: 0 1; }
    """
    BINDINGS: ClassVar = [Binding("q", "quit", "quit"),
                          Binding("ctrl+c", "quit", "quit", priority=True)]

    def __init__(self, view: LiveView, policy: UpstreamPolicy | None, pool_size: int):
        super().__init__()
        self.view = view
        self.policy = policy
        self.pool_size = pool_size
        self.redraws = 0
        self.first_redraw: float | None = None
        self.shown: dict[str, object] = {}

    def compose(self) -> ComposeResult:
        yield Static(id="title")
        with Horizontal():
            yield self._panel("nodes", "nodes (Docker state, readiness)")
            yield self._panel("faults", "faults in place (lab faults)")
        yield self._panel("probe", "probe stream through NGINX (clients' view)")
        with Horizontal():
            yield self._panel("nginx", "NGINX's view (access log)")
            yield self._panel("stub", "stub_status")
        with Horizontal():
            yield self._panel("locks", "job locks (Redis)")
            yield self._panel("pool", "PgBouncer (SHOW POOLS)")
        yield Static(id="errors")

    @staticmethod
    def _panel(name: str, title: str) -> Static:
        panel = Static(id=name, classes="panel")
        panel.border_title = title
        return panel

    def on_mount(self) -> None:
        # SIGTERM ends it like q: Textual restores the terminal on the way out.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self.exit)
        self.set_interval(REDRAW_S, self.redraw)
        self.redraw()

    def redraw(self) -> None:
        """Draw the latest snapshot (no I/O here: the sampler runs in its own thread)."""
        if self.view.ended:
            self.exit()
            return
        snap = self.view.snapshot()
        now = time.monotonic()
        self.first_redraw = self.first_redraw or now
        self.redraws += 1
        per_s = (self.redraws - 1) / (now - self.first_redraw) if now > self.first_redraw else None
        second = int(snap.at)
        pool = snap.pool.model_copy(update={"at": 0.0}) if snap.pool else None
        # Each panel with what it shows: a panel whose inputs did not change is not drawn again
        # (the probe and NGINX panels show ages, so they change at every redraw).
        panels = {
            "title": ((second, round(per_s or 0, 1)), lambda: title_line(snap, per_s)),
            "nodes": (snap.nodes, lambda: nodes_panel(snap)),
            "faults": ((snap.faults, second), lambda: faults_panel(snap)),
            "probe": (None, lambda: probe_panel(snap)),
            "nginx": (None, lambda: nginx_panel(snap, self.policy)),
            "stub": (snap.stub_status, lambda: stub_panel(snap)),
            "locks": (snap.locks, lambda: locks_panel(snap)),
            "pool": (pool, lambda: pool_panel(snap, self.pool_size)),
            "errors": (snap.errors, lambda: errors_line(snap)),
        }
        for name, (key, draw) in panels.items():
            if key is not None and self.shown.get(name) == key:
                continue
            self.shown[name] = key
            self.query_one(f"#{name}", Static).update(draw())
