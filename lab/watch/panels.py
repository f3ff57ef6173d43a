"""The panels of ``lab watch``: pure functions, a ``Snapshot`` in, a rich renderable out (the
Textual app in ``lab.watch.app`` places them; the unit tests read them as text)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rich.console import Group, RenderableType
from rich.text import Text

from lab.expectations import UpstreamPolicy, worst_case_ejection_s
from lab.faults import FAULTS
from lab.units import text_seconds
from lab.watch.model import Snapshot

_SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], top: float | None = None) -> str:
    """Block characters, one per value, scaled to ``top`` (default: the largest); 0 is a space."""
    peak = max(values, default=0) if top is None else top
    out = []
    for value in values:
        if value <= 0 or peak <= 0:
            out.append(" ")
        else:
            out.append(_SPARKS[min(len(_SPARKS) - 1, int(value / peak * (len(_SPARKS) - 1) + 0.5))])
    return "".join(out)


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%H:%M:%S")


def _ago(at: float | None, now: float) -> str:
    return "-" if at is None else f"{max(0.0, now - at):.1f} s ago"


def _ms(ms: float | None) -> str:
    return text_seconds(None if ms is None else ms / 1000, decimals=2)


def _state_style(state: str) -> str:
    return {"running": "green", "paused": "yellow"}.get(state, "bold red")


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
    """NGINX's stub_status counters and its request rate."""
    s = snap.stub_status
    if s is None:
        return Text("no answer", style="dim")
    rate = "-" if s.requests_per_s is None else f"{s.requests_per_s:.1f}"
    return Text(f"active connections {s.active}\nreading {s.reading}  writing {s.writing}  "
                f"waiting {s.waiting}\nrequests/s {rate}\naccepts {s.accepts}  handled "
                f"{s.handled}  requests {s.requests}")


def locks_panel(snap: Snapshot) -> RenderableType:
    """Each job's lock: its holder in Redis and its fencing token."""
    if snap.locks is None:
        return Text("no answer from Redis", style="dim")
    return _grid(("job", "holder", "fencing token"),
                 [(lock.job, lock.holder or Text("free", style="dim"),
                   "-" if lock.token is None else str(lock.token)) for lock in snap.locks])


def pool_panel(snap: Snapshot, pool_size: int) -> RenderableType:
    """PgBouncer's clients and server connections for the app database."""
    p = snap.pool
    if p is None:
        return Text("no answer from PgBouncer", style="dim")
    waiting = Text(str(p.cl_waiting), style="bold yellow" if p.cl_waiting else "")
    return Text.assemble(f"clients active {p.cl_active}  waiting ", waiting,
                         f"\nserver connections {p.servers} of {pool_size} "
                         f"(active {p.sv_active}, idle {p.sv_idle})\n"
                         f"longest wait {p.maxwait_s:.3f} s")


def errors_line(snap: Snapshot) -> Text:
    """The sources with no fresh reading, and why."""
    if not snap.errors:
        return Text("")
    return Text("no fresh reading: " + "; ".join(f"{source}: {why}" for source, why in snap.errors),
                style="yellow")
