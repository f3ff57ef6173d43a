"""``lab watch``: one lab live on one screen, for a projector, while someone breaks it.

The data comes from ``lab.workload.live.LiveView`` (a bounded probe stream through NGINX and
what the nodes say); this module only draws it, with Textual (terminal modes, keys, resizing
and a clean exit are Textual's), or prints one JSON snapshot per interval with ``--json``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from datetime import datetime
from typing import Annotated, ClassVar

import typer
from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Static

from lab.cli.common import (
    ConfigOption,
    NameOption,
    config_for,
    console,
    engine,
    lab_errors,
    seconds_option,
)
from lab.errors import ConfigError, LabError
from lab.expectations import UpstreamPolicy, worst_case_ejection_s
from lab.faults import FAULTS
from lab.topology.lab import Lab
from lab.workload.live import LiveView, Snapshot, sparkline

REDRAW_S = 0.45          # a little more than twice a second
MAX_RATE = 200.0         # req/s: the watch observes, it is no load test
MAX_DURATION_S = 8 * 3600.0


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%H:%M:%S")


def _ago(at: float | None, now: float) -> str:
    return "-" if at is None else f"{max(0.0, now - at):.1f} s ago"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def _state_style(state: str) -> str:
    return {"running": "green", "paused": "yellow"}.get(state, "bold red")


# -- panels (pure: a snapshot in, a renderable out) ------------------------------------------------


def _grid(columns: tuple[str, ...], rows: list[tuple[str | Text, ...]]) -> Text:
    """Rows under bold column names, each column as wide as its widest cell. Plain text, not a
    rich Table: a table measures and lays out its cells again for every line Textual draws,
    which was most of the watch's drawing time."""
    cells = [tuple(Text(c) if isinstance(c, str) else c for c in row) for row in rows]
    widths = [max([len(name)] + [cell.cell_len for cell in column])
              for name, column in zip(columns, zip(*cells, strict=True) if cells else
                                      [()] * len(columns), strict=True)]
    out = Text("  ".join(name.ljust(w) for name, w in zip(columns, widths, strict=True)).rstrip(),
               style="bold")
    for row in cells:
        line = Text()
        for index, (cell, width) in enumerate(zip(row, widths, strict=True)):
            line.append_text(cell)
            if index < len(row) - 1:
                line.append(" " * (width - cell.cell_len + 2))
        out.append("\n")
        out.append_text(line)
    return out


def title_line(snap: Snapshot, redraws_per_s: float | None = None) -> Text:
    """What is watched, until when, and the keys."""
    left = max(0.0, snap.ends_at - snap.at)
    rate = f"  redraw {redraws_per_s:.1f}/s" if redraws_per_s else ""
    return Text.assemble((f"lab watch: {snap.lab}", "bold"),
                         f"   probe GET {snap.probe.path} through NGINX at "
                         f"{snap.probe.rate_per_s:g} req/s, window {snap.probe.window_s:g} s, "
                         f"ends in {left:.0f} s   {_clock(snap.at)}{rate}   ", ("q quits", "bold"))


def nodes_panel(snap: Snapshot) -> Text:
    """Every node: Docker's state and its readiness."""
    rows: list[tuple[str | Text, ...]] = []
    for node in snap.nodes:
        ready = ("..." if node.ready is None else
                 Text("yes", style="green") if node.ready else Text("no", style="bold red"))
        rows.append((node.name, Text(node.state, style=_state_style(node.state)), ready,
                     node.detail[:34]))
    return _grid(("node", "state", "ready", "detail"), rows)


def faults_panel(snap: Snapshot) -> RenderableType:
    """The faults in place (the lab's record), by whom and since when."""
    if not snap.faults:
        return Text("none recorded", style="dim")
    rows: list[tuple[str | Text, ...]] = []
    for f in snap.faults:
        fault = f"{f.kind} {f.params}".strip()
        since = f"{_clock(f.since)} ({snap.at - f.since:.0f} s)"
        if f.until is not None:
            since += f", heals in {max(0.0, f.until - snap.at):.0f} s"
        rows.append((f.target, Text(fault, style="bold"), since, f.by[:26],
                     Text(f.state, style="yellow" if f.state.startswith("in place") else "dim")))
    return _grid(("node", "fault", "since", "by", "state"), rows)


def probe_panel(snap: Snapshot) -> Group:
    """The clients' view: each backend's share, answers per second and its last 30 s."""
    p = snap.probe
    top = max((v for b in p.backends for v in b.series), default=0)
    rows: list[tuple[str | Text, ...]] = []
    for b in p.backends:
        style = "bold red" if b.per_s == 0 else ""
        rows.append((b.name, Text(f"{b.share:5.0%}", style=style),
                     Text(f"{b.per_s:4.0f}", style=style), sparkline(b.series, top),
                     _ago(b.last_ok_at, snap.at)))
    table = _grid(("backend", "share", "ok/s", "last 30 s (ok answers per second)", "last ok"),
                  rows)
    statuses = "  ".join(f"{status} ×{count}" for status, count in p.statuses) or "none yet"
    failed = Text(f"{p.failed} failed", style="bold red" if p.failed else "")
    unknown = Text(f"{p.unknown} unknown", style="yellow" if p.unknown else "")
    summary = Text.assemble(f"last {p.window_s:g} s: {p.sent} answered, ", failed, ", ", unknown,
                            f"   statuses: {statuses}   p50 {_ms(p.p50_ms)}  p99 {_ms(p.p99_ms)}")
    return Group(table, summary)


def nginx_panel(snap: Snapshot, policy: UpstreamPolicy | None) -> Group:
    """NGINX's own view from its access log: tries per upstream, failed tries, the ejection."""
    n = snap.nginx
    rows: list[tuple[str | Text, ...]] = []
    kinds = {f.target: f.kind for f in snap.faults if f.state.startswith("in place")}
    # NGINX's request rate, every client's: the round-robin turn the prediction needs.
    rate = n.requests_per_s or snap.probe.rate_per_s
    for u in n.upstreams:
        faulted = ""
        if u.fault_since is not None:
            expect = ""
            mode = FAULTS.get(kinds[u.name]).failure_mode if u.name in kinds else None
            if policy is not None and mode is not None and policy.ejects:
                worst, _ = worst_case_ejection_s(policy, mode, rate)
                expect = f" (predicted <= {worst:.2f} s at {rate:.0f} req/s)"
            if u.ejected_after_s is None:
                faulted = "not tried since the fault" if u.ejection_settled else "..."
            elif u.ejection_settled:
                faulted = f"ejected +{u.ejected_after_s:.2f} s after the fault{expect}"
            else:
                faulted = f"still tried (+{u.ejected_after_s:.2f} s){expect}"
        failed = Text(str(u.failed), style="bold red" if u.failed else "")
        rows.append((u.name, str(u.tries), failed, _ago(u.last_try_at, snap.at), faulted))
    table = _grid(("upstream", "tries", "failed", "last try", "while faulted"), rows)
    statuses = "  ".join(f"{status} ×{count}" for status, count in n.statuses) or "none"
    summary = Text(f"last {n.window_s:g} s: {n.requests} requests (every client), {n.retried} "
                   f"retried on another server, {n.no_live_upstream} with no live upstream; "
                   f"statuses: {statuses}")
    return Group(table, summary)


def stub_panel(snap: Snapshot) -> RenderableType:
    s = snap.stub_status
    if s is None:
        return Text("no answer", style="dim")
    rate = "-" if s.requests_per_s is None else f"{s.requests_per_s:.1f}"
    return Text(f"active connections {s.active}\nreading {s.reading}  writing {s.writing}  "
                f"waiting {s.waiting}\nrequests/s {rate}\naccepts {s.accepts}  handled "
                f"{s.handled}  requests {s.requests}")


def locks_panel(snap: Snapshot) -> RenderableType:
    if snap.locks is None:
        return Text("no answer from Redis", style="dim")
    return _grid(("job", "holder", "fencing token"),
                 [(lock.job, lock.holder or Text("free", style="dim"),
                   "-" if lock.token is None else str(lock.token)) for lock in snap.locks])


def pool_panel(snap: Snapshot, pool_size: int) -> RenderableType:
    p = snap.pool
    if p is None:
        return Text("no answer from PgBouncer", style="dim")
    waiting = Text(str(p.cl_waiting), style="bold yellow" if p.cl_waiting else "")
    return Text.assemble(f"clients active {p.cl_active}  waiting ", waiting,
                         f"\nserver connections {p.servers} of {pool_size} "
                         f"(active {p.sv_active}, idle {p.sv_idle})\n"
                         f"longest wait {p.maxwait_s:.3f} s")


def errors_line(snap: Snapshot) -> Text:
    if not snap.errors:
        return Text("")
    return Text("no fresh reading: " + "; ".join(f"{source}: {why}" for source, why in snap.errors),
                style="yellow")


# -- the Textual app -------------------------------------------------------------------------


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


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def watch(
    name: NameOption = None,
    config_path: ConfigOption = None,
    rate: Annotated[float, typer.Option(help=f"Probe requests per second through NGINX "
                                             f"(at most {MAX_RATE:g}).")] = 20.0,
    duration: Annotated[str, typer.Option(help="Stop by itself after this long (30s, 10m, "
                                               "1h).")] = "10m",
    window: Annotated[str, typer.Option(help="The sliding window of shares, statuses and "
                                             "latency.")] = "10s",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON snapshot per interval "
                                                         "instead of the screen.")] = False,
    interval: Annotated[str, typer.Option(help="With --json: time between snapshots.")] = "1s",
) -> None:
    """Watch one lab live: nodes, faults, the traffic's shares, NGINX's view, locks, the pool."""
    with lab_errors():
        if not 0 < rate <= MAX_RATE:
            raise ConfigError(f"--rate {rate:g}: must be more than 0 and at most {MAX_RATE:g}")
        duration_s = seconds_option(duration, "--duration", MAX_DURATION_S)
        window_s = seconds_option(window, "--window", 120.0)
        interval_s = seconds_option(interval, "--interval", 60.0)
        config = config_for(config_path, name)
        lab = Lab.attach(engine(), config.name)
        try:
            policy: UpstreamPolicy | None = lab.nginx_policy().upstream
        except LabError:
            policy = None   # the predicted ejection is not shown; everything else is
        # NGINX logs a try when it ends: after proxy_read_timeout at worst (a frozen backend).
        lag = policy.read_timeout_s + policy.connect_timeout_s if policy is not None else 6.0
        view = LiveView(lab, rate_per_s=rate, duration_s=duration_s, window_s=window_s,
                        log_lag_s=lag)
        signal.signal(signal.SIGTERM, _on_sigterm)
        started = time.monotonic()
        try:
            view.start()
            if as_json:
                _print_snapshots(view, interval_s)
                return
            app = WatchApp(view, policy, lab.config.pgbouncer.default_pool_size)
            app.run()
            elapsed = time.monotonic() - started
            console.print(Text(f"lab watch: {app.redraws} redraws in {elapsed:.0f} s"
                               + (", the probe stream ended" if view.ended else ""), style="dim"))
        except KeyboardInterrupt:
            pass
        finally:
            view.stop()


def _print_snapshots(view: LiveView, interval_s: float) -> None:
    """One JSON line per interval until the stream ends (or Ctrl-C)."""
    next_at = time.monotonic() + interval_s
    while not view.ended:
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += interval_s
        sys.stdout.write(view.snapshot().model_dump_json() + "\n")
        sys.stdout.flush()
