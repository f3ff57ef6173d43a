"""``report.html``: one self-contained page per run, drawn from its ``result.json``.

On one time axis from the run's start (seconds): every client request as a point (x its
intended send time, y its latency on a log scale, coloured by the backend that answered;
failures as red crosses, unknowns as amber triangles in the "no answer" strip), each
backend's share of the answers, the faults shaded from inject to heal (each as its fault's
definition draws it, ``FaultDef.band``), and a marker at each moment a check measured (as its
check's entry says, ``CheckDef.marker``). Lock scenarios add each node's job runs (overlaps red,
fencing refusals marked), pool scenarios the pool's connections and queue, health watches
each endpoint's status. Below: the checks and objectives with what was measured, expected and
why, the predictions, the exact request counts and percentiles, and what the run was.

The page is inline SVG and CSS: no script, no font, nothing fetched (the lab runs offline).
Runs of more than ``POINT_LIMIT`` requests are drawn aggregated so that a 10-minute run
stays small and quick to open: answered requests become cells of ``CELL_W_PX`` x
``CELL_H_PX`` pixels (time x latency), one per backend, shaded by how many requests each
holds (``data-n``); failed and unknown requests stay single points up to
``FAILURE_POINT_LIMIT``. Counts and percentiles are always computed from every request.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.checks import CHECKS, Verdict
from lab.checks.registry import After, TimelineMark
from lab.faults import FAULTS, Band
from lab.history import WATCHED, FaultEvent, History, Outcome, RequestRecord
from lab.report.stored import RESULT_FILE, StoredCheck, StoredRun, load
from lab.stats import nearest_rank as percentile

REPORT_FILE = "report.html"
POINT_LIMIT = 5_000           # requests drawn one by one up to this many
FAILURE_POINT_LIMIT = 2_000   # failed/unknown requests drawn one by one up to this many
CELL_W_PX, CELL_H_PX = 3, 4   # the aggregate's cell size

LEFT, RIGHT, PLOT_W = 150, 24, 990
WIDTH = LEFT + PLOT_W + RIGHT
SCATTER_H, STRIP_H, SHARE_H, POOL_H, LANE_H, GAP = 240, 16, 90, 140, 14, 34

BACKEND_COLOURS = ("#3366cc", "#109618", "#990099", "#0099c6", "#8c564b", "#dd4477")
FAIL_COLOUR, UNKNOWN_COLOUR, OTHER_COLOUR = "#d62728", "#e69500", "#7f7f7f"
STATUS_COLOURS = {200: "#2ca02c", 503: "#ff7f0e"}
READS = frozenset({"GET", "HEAD"})


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.3f} s"


# -- the time axis ----------------------------------------------------------------------


@dataclass(frozen=True)
class Axis:
    """Run time (epoch seconds) to x pixels; 0 is the run's start."""

    t0: float
    span_s: float

    def x(self, at: float) -> float:
        return LEFT + (at - self.t0) / self.span_s * PLOT_W

    def rel(self, at: float) -> float:
        return at - self.t0


def _axis(run: StoredRun) -> Axis:
    # From the run's start (or anything recorded before it) to the last thing recorded: the
    # records of several streams and samplers are not in time order.
    h = run.history
    ends = [run.finished_at, *(r.finished_at or r.sent_at for r in h.requests),
            *(r.intended_at for r in h.requests), *(e.at for e in h.faults),
            *(j.finished_at or j.started_at for j in h.job_runs),
            *(s.at for s in h.pool_samples), *(s.at for s in h.health_samples),
            *(s.received_at for s in h.lock_samples)]
    starts = [run.started_at, *(r.intended_at for r in h.requests), *(e.at for e in h.faults)]
    t0 = min(starts)
    return Axis(t0, max(1.0, max(ends) - t0))


def _nice_step(span: float, target: int) -> float:
    raw = span / max(1, target)
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


# -- markers: the moments the checks measured ------------------------------------------


@dataclass(frozen=True)
class Marker:
    """A moment one check measured, drawn as a line across the timeline."""

    at: float
    check: str
    verdict: Verdict
    label: str


Window = tuple[FaultEvent, FaultEvent | None]


def _window_for(check: StoredCheck, history: History) -> Window | None:
    # The check names its target in its texts; a check of one fault has one window anyway.
    windows = history.fault_windows()
    text = " ".join((check.measured, check.expected, *check.details))
    named = [w for w in windows if w[0].target in text]
    return (named or windows or [None])[0]


def _mark(mark: TimelineMark, check: StoredCheck, history: History) -> list[Marker]:
    """Where one check's measurement sits: its value after the inject or heal it counts from."""
    measured = check.value(mark.value)
    if mark.after is After.LAST_HEAL:
        heals = [h for _, h in history.fault_windows() if h is not None]
        event = max(heals, key=lambda e: e.at) if heals else None
    else:
        window = _window_for(check, history)
        event = None if window is None else window[0] if mark.after is After.INJECT else window[1]
    if measured is None or event is None:
        return []
    since = f"after {event.fault}" if mark.after is After.INJECT else "after the heal"
    return [Marker(event.at + measured, check.name, check.verdict,
                   f"{check.display}: {mark.what} +{measured:.3f} s {since}")]


def markers(run: StoredRun) -> list[Marker]:
    """Every marker the run's checks give, each where its check's entry says (a check this lab
    no longer has, in an old result, gives none)."""
    out: list[Marker] = []
    for check in run.checks:
        mark = CHECKS.get(check.name).marker if check.name in CHECKS else None
        if mark is not None:
            out.extend(_mark(mark, check, run.history))
    return out


# -- the SVG ---------------------------------------------------------------------------


class _Svg:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.y = 8.0

    def add(self, text: str) -> None:
        self.parts.append(text)

    def title(self, text: str, note: str = "") -> None:
        self.y += 18
        self.add(f'<text class="panel-title" x="{LEFT}" y="{_num(self.y)}">{_esc(text)}'
                 + (f'<tspan class="panel-note" dx="10">{_esc(note)}</tspan>' if note else "")
                 + "</text>")
        self.y += 8


def _colours(history: History) -> dict[str, str]:
    names = sorted({r.backend for r in history.requests if r.backend}
                   | {j.node for j in history.job_runs}
                   | {s.holder for s in history.lock_samples if s.holder})
    return {name: BACKEND_COLOURS[i % len(BACKEND_COLOURS)] for i, name in enumerate(names)}


@dataclass(frozen=True)
class _LogScale:
    lo: float
    hi: float
    top: float
    height: float

    def y(self, seconds: float) -> float:
        value = min(max(seconds, self.lo), self.hi)
        lo, hi = math.log10(self.lo), math.log10(self.hi)
        share = (math.log10(value) - lo) / (hi - lo)
        return self.top + self.height * (1 - share)


def _latency_scale(requests: Sequence[RequestRecord], top: float) -> _LogScale:
    latencies = [r.latency_s for r in requests if r.latency_s]
    lo = 10 ** math.floor(math.log10(max(1e-4, min(latencies, default=1e-3))))
    hi = 10 ** math.ceil(math.log10(max(lo * 10, max(latencies, default=1.0))))
    return _LogScale(lo, hi, top, SCATTER_H)


def _latency_label(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:g} µs"
    if seconds < 1:
        return f"{seconds * 1e3:g} ms"
    return f"{seconds:g} s"


def _request_title(r: RequestRecord, axis: Axis) -> str:
    answer = f"{r.status} in {_seconds(r.latency_s)}" if r.latency_s is not None else \
        f"no answer ({r.error or 'unknown'})"
    return (f"#{r.id} {r.client} {r.method} {r.path} +{axis.rel(r.intended_at):.3f} s: "
            f"{answer}, {r.outcome.value}" + (f", served by {r.backend}" if r.backend else ""))


def _point(r: RequestRecord, axis: Axis, scale: _LogScale, strip_y: float,
           colours: dict[str, str]) -> str:
    x = _num(axis.x(r.intended_at))
    attrs = (f'data-id="{r.id}" data-outcome="{r.outcome.value}" '
             f'data-backend="{_esc(r.backend or "")}" data-t="{axis.rel(r.intended_at):.3f}"')
    tip = f"<title>{_esc(_request_title(r, axis))}</title>"
    if r.outcome is Outcome.OK:
        colour = colours.get(r.backend or "", OTHER_COLOUR)
        y = scale.y(r.latency_s or scale.lo)
        if r.method.upper() not in READS:  # writes as squares, so the two streams tell apart
            return (f'<rect class="req" {attrs} x="{_num(float(x) - 2.2)}" y="{_num(y - 2.2)}" '
                    f'width="4.4" height="4.4" fill="{colour}">{tip}</rect>')
        return (f'<circle class="req" {attrs} cx="{x}" cy="{_num(y)}" '
                f'r="2.2" fill="{colour}">{tip}</circle>')
    if r.latency_s is None:  # no answer: drawn in the strip above the plot
        y = strip_y + STRIP_H / 2
        return (f'<path class="req unknown" {attrs} d="M{x} {_num(y - 4)}l4 7h-8z" '
                f'fill="none" stroke="{UNKNOWN_COLOUR}" stroke-width="1.4">{tip}</path>')
    y = scale.y(r.latency_s)
    colour = FAIL_COLOUR if r.outcome is Outcome.FAIL else UNKNOWN_COLOUR
    return (f'<path class="req {r.outcome.value}" {attrs} d="M{_num(float(x) - 3)} {_num(y - 3)}'
            f'l6 6m0 -6l-6 6" stroke="{colour}" stroke-width="1.6">{tip}</path>')


def _cells(requests: Iterable[RequestRecord], axis: Axis, scale: _LogScale, strip_y: float,
           colours: dict[str, str], kind: str) -> list[str]:
    """Requests binned into time x latency cells, one per backend (or per outcome)."""
    counts: Counter[tuple[int, int, str]] = Counter()
    for r in requests:
        col = int((axis.x(r.intended_at) - LEFT) // CELL_W_PX)
        row = -1 if r.latency_s is None else int((scale.y(r.latency_s) - scale.top) // CELL_H_PX)
        counts[(col, row, r.backend or "" if kind == "ok" else r.outcome.value)] += 1
    if not counts:
        return []
    names = sorted({key for _, _, key in counts})
    most = max(counts.values())
    out = []
    for (col, row, key), n in sorted(counts.items()):
        opacity = 0.25 + 0.75 * math.log1p(n) / math.log1p(most)
        if kind == "ok":
            width = CELL_W_PX / max(1, len(names))
            x = LEFT + col * CELL_W_PX + names.index(key) * width
            fill = colours.get(key, OTHER_COLOUR)
        else:
            width, x = CELL_W_PX, LEFT + col * CELL_W_PX
            fill = FAIL_COLOUR if key == Outcome.FAIL.value else UNKNOWN_COLOUR
        y = strip_y if row < 0 else scale.top + row * CELL_H_PX
        height = STRIP_H if row < 0 else CELL_H_PX
        out.append(f'<rect class="cell {kind}" data-n="{n}" data-key="{_esc(key)}" '
                   f'x="{_num(x)}" y="{_num(y)}" width="{_num(width)}" height="{height}" '
                   f'fill="{fill}" fill-opacity="{opacity:.2f}"/>')
    return out


def _requests_panel(svg: _Svg, run: StoredRun, axis: Axis, colours: dict[str, str]) -> str:
    requests = run.history.requests
    aggregate = len(requests) > POINT_LIMIT
    note = ("one point per request" if not aggregate else
            f"{len(requests):,} requests aggregated into {CELL_W_PX}x{CELL_H_PX} px cells "
            "(darker: more requests)")
    svg.title("Requests: latency by intended send time (log scale)", note)
    strip_y = svg.y
    scale = _latency_scale(requests, strip_y + STRIP_H + 4)
    svg.add(f'<rect class="strip" x="{LEFT}" y="{_num(strip_y)}" width="{PLOT_W}" '
            f'height="{STRIP_H}"/><text class="tick" x="{LEFT - 6}" y="{_num(strip_y + 12)}" '
            'text-anchor="end">no answer</text>')
    decade = scale.lo
    while decade <= scale.hi * 1.0001:
        y = _num(scale.y(decade))
        svg.add(f'<line class="grid" x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{y}" y2="{y}"/>'
                f'<text class="tick" x="{LEFT - 6}" y="{y}" dy="4" text-anchor="end">'
                f"{_latency_label(decade)}</text>")
        decade *= 10
    ok = [r for r in requests if r.outcome is Outcome.OK]
    bad = [r for r in requests if r.outcome is not Outcome.OK]
    drawn = 0
    svg.add(f'<g class="requests" data-mode="{"aggregate" if aggregate else "points"}" '
            f'data-requests="{len(requests)}">')
    if aggregate:
        svg.parts.extend(_cells(ok, axis, scale, strip_y, colours, "ok"))
    else:
        svg.parts.extend(_point(r, axis, scale, strip_y, colours) for r in ok)
        drawn += len(ok)
    if len(bad) > FAILURE_POINT_LIMIT:
        svg.parts.extend(_cells(bad, axis, scale, strip_y, colours, "bad"))
    else:
        svg.parts.extend(_point(r, axis, scale, strip_y, colours) for r in bad)
        drawn += len(bad)
    svg.add("</g>")
    svg.y = scale.top + SCATTER_H + 6
    return (f"{len(requests):,} requests, {drawn:,} drawn as single points"
            + ("" if not aggregate else "; the rest as cells whose data-n add up to them"))


def _share_bin(span_s: float, rate: float) -> float:
    # About a dozen requests per bin at the run's rate, and at most 300 bins.
    want = max(span_s / 300, 12 / max(rate, 0.1), 0.1)
    return _nice_step(want, 1)


def _share_panel(svg: _Svg, run: StoredRun, axis: Axis, colours: dict[str, str]) -> None:
    requests = run.history.requests
    rate = len(requests) / axis.span_s
    width = _share_bin(axis.span_s, rate)
    svg.title("Share of answers by backend", f"bins of {width:g} s; red: failed, amber: unknown")
    top = svg.y
    bins: dict[int, Counter[str]] = defaultdict(Counter)
    for r in requests:
        key = r.backend if r.outcome is Outcome.OK and r.backend else f"!{r.outcome.value}"
        bins[int(axis.rel(r.intended_at) // width)][key] += 1
    layers = [*sorted(colours), f"!{Outcome.FAIL.value}", f"!{Outcome.UNKNOWN.value}"]
    fills = {**colours, f"!{Outcome.FAIL.value}": FAIL_COLOUR,
             f"!{Outcome.UNKNOWN.value}": UNKNOWN_COLOUR}
    svg.add(f'<rect class="strip" x="{LEFT}" y="{_num(top)}" width="{PLOT_W}" height="{SHARE_H}"/>')
    for i in sorted(bins):
        counts = bins[i]
        total = sum(counts.values())
        x0 = axis.x(axis.t0 + i * width)
        x1 = min(axis.x(axis.t0 + (i + 1) * width), LEFT + PLOT_W)
        y = top + SHARE_H
        for layer in layers:
            n = counts.get(layer, 0)
            if not n:
                continue
            h = SHARE_H * n / total
            y -= h
            name = layer.lstrip("!")
            svg.add(f'<rect class="share" data-layer="{_esc(name)}" data-n="{n}" '
                    f'x="{_num(x0)}" y="{_num(y)}" width="{_num(max(0.5, x1 - x0))}" '
                    f'height="{_num(h)}" fill="{fills.get(layer, OTHER_COLOUR)}">'
                    f"<title>+{i * width:g}-{(i + 1) * width:g} s: {_esc(name)} {n} of "
                    f"{total}</title></rect>")
    for share in (0.5, 1.0):
        y = _num(top + SHARE_H * (1 - share))
        svg.add(f'<text class="tick" x="{LEFT - 6}" y="{y}" dy="4" text-anchor="end">'
                f"{share:.0%}</text>")
    svg.y = top + SHARE_H + 6


def _lane(svg: _Svg, label: str) -> float:
    y = svg.y
    svg.add(f'<rect class="lane" x="{LEFT}" y="{_num(y)}" width="{PLOT_W}" height="{LANE_H - 2}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{_num(y + LANE_H - 4)}" text-anchor="end">'
            f"{_esc(label)}</text>")
    svg.y += LANE_H
    return y


def _segments(points: Sequence[tuple[float, Any]], end: float) -> list[tuple[float, float, Any]]:
    """Consecutive equal values merged: (start, end, value), each lasting until the next."""
    out: list[tuple[float, float, Any]] = []
    for i, (at, value) in enumerate(points):
        until = points[i + 1][0] if i + 1 < len(points) else end
        if out and out[-1][2] == value and math.isclose(out[-1][1], at):
            out[-1] = (out[-1][0], until, value)
        else:
            out.append((at, until, value))
    return out


def _bar(css: str, axis: Axis, start: float, stop: float, y: float, height: float, *,
         attrs: str = "", fill: str = "", title: str = "", minimum: float = 1.0) -> str:
    """One horizontal bar on the time axis, from ``start`` to ``stop`` (epoch seconds)."""
    x0 = axis.x(start)
    paint = f' fill="{fill}"' if fill else ""
    return (f'<rect class="{css}" {attrs} x="{_num(x0)}" y="{_num(y)}" '
            f'width="{_num(max(minimum, axis.x(stop) - x0))}" height="{_num(height)}"{paint}>'
            f"<title>{_esc(title)}</title></rect>")


def _holder_lane(svg: _Svg, job: str, samples: Sequence[Any], axis: Axis,
                 colours: dict[str, str]) -> None:
    y = _lane(svg, "holder in Redis")
    points = [(s.received_at, s.holder) for s in samples]
    for start, until, holder in _segments(points, samples[-1].received_at):
        if holder is not None:
            svg.add(_bar("holder", axis, start, until, y + 3, LANE_H - 8, minimum=0.5,
                         attrs=f'data-job="{_esc(job)}" data-node="{_esc(holder)}" '
                               'fill-opacity="0.6"',
                         fill=colours.get(holder, OTHER_COLOUR),
                         title=f"Redis names {holder} as the holder of {job} "
                               f"+{axis.rel(start):.2f}-{axis.rel(until):.2f} s"))


def _run_lane(svg: _Svg, job: str, node: str, runs: Sequence[Any], history: History,
              axis: Axis, colours: dict[str, str]) -> None:
    end = axis.t0 + axis.span_s
    y = _lane(svg, node)

    def finish(run: Any) -> float:
        return run.finished_at if run.finished_at is not None else end

    for run in (r for r in runs if r.node == node):
        until = ("never finished (outcome unknown)" if run.finished_at is None
                 else f"+{axis.rel(run.finished_at):.3f} s")
        dashed = ' stroke-dasharray="3 2"' if run.finished_at is None else ""
        svg.add(_bar("job-run", axis, run.started_at, finish(run), y + 1, LANE_H - 4,
                     attrs=f'data-job="{_esc(job)}" data-node="{_esc(node)}" '
                           f'data-outcome="{_esc(run.outcome)}" stroke="#333" '
                           f'stroke-width="0.5"{dashed}',
                     fill=colours.get(node, OTHER_COLOUR),
                     title=f"{job} run {run.id} on {node}, tick {run.tick}, token "
                           f"{run.fencing_token}: +{axis.rel(run.started_at):.3f} s to {until}, "
                           f"{run.outcome}"))
        for other in runs:  # sorted by start: none after this run's end can overlap it
            if other.started_at >= finish(run):
                break
            start, stop = max(run.started_at, other.started_at), min(finish(run), finish(other))
            if other.id != run.id and stop > start:
                svg.add(_bar("overlap", axis, start, stop, y + 1, LANE_H - 4,
                             attrs=f'data-job="{_esc(job)}" data-node="{_esc(node)}"',
                             title=f"overlaps {other.node}'s run {other.id} for "
                                   f"{stop - start:.3f} s"))
    for refusal in history.fencing_rejections:
        if refusal.job == job and refusal.node == node:
            x, cy = axis.x(refusal.at), y + LANE_H / 2 - 1
            svg.add(f'<path class="fenced" data-job="{_esc(job)}" data-node="{_esc(node)}" '
                    f'd="M{_num(x - 4)} {_num(cy - 4)}l8 8m0 -8l-8 8"><title>fencing refused '
                    f"{_esc(node)}'s write (token {refusal.token}, the resource had "
                    f"{refusal.last_token}) at +{axis.rel(refusal.at):.3f} s</title></path>")


def _locks_panel(svg: _Svg, run: StoredRun, axis: Axis, colours: dict[str, str]) -> None:
    h = run.history
    svg.title("Job runs per node", "red: runs of one job overlapping; ✕: write refused by fencing")
    for job in sorted({j.job for j in h.job_runs} | {s.job for s in h.lock_samples}):
        runs = sorted((j for j in h.job_runs if j.job == job), key=lambda j: j.started_at)
        samples = sorted((s for s in h.lock_samples if s.job == job), key=lambda s: s.received_at)
        svg.add(f'<text class="group" x="{LEFT - 6}" y="{_num(svg.y + 10)}" text-anchor="end">'
                f"{_esc(job)}</text>")
        svg.y += 13
        if samples:
            _holder_lane(svg, job, samples, axis, colours)
        for node in sorted({j.node for j in runs}):
            _run_lane(svg, job, node, runs, h, axis, colours)
    svg.y += 4


def _pool_size(run: StoredRun) -> tuple[float, str] | None:
    pgbouncer = (run.config or {}).get("pgbouncer")
    if isinstance(pgbouncer, dict) and isinstance(pgbouncer.get("default_pool_size"), int | float):
        return float(pgbouncer["default_pool_size"]), "default_pool_size"
    for check in run.checks:
        value = CHECKS.get(check.name).pool_size if check.name in CHECKS else None
        if value is not None and check.value(value) is not None:
            return float(check.value(value) or 0), f"the {check.name} check's {value}"
    return None


def _pool_panel(svg: _Svg, run: StoredRun, axis: Axis) -> None:
    h = run.history
    databases = Counter(s.database for s in h.pool_samples if s.database != "pgbouncer")
    database = (run.config or {}).get("postgres", {}).get("database") or \
        (databases.most_common(1)[0][0] if databases else "")
    samples = [s for s in h.pool_samples if s.database == database]
    size = _pool_size(run)
    series = {
        "server connections": ("#1f77b4", [(s.at, float(s.sv_total)) for s in samples]),
        "waiting clients": ("#d62728", [(s.at, float(s.cl_waiting)) for s in samples]),
        "active clients": ("#9467bd", [(s.at, float(s.cl_active)) for s in samples]),
        "PostgreSQL connections": ("#17becf",
                                   [(s.at, float(s.connections)) for s in h.server_activity]),
    }
    peak = max([v for _, pts in series.values() for _, v in pts] + [size[0] if size else 1.0])
    svg.title(f"Connection pool ({database or 'every pool'})",
              f"pool size {size[0]:g} ({size[1]})" if size else "")
    top = svg.y
    svg.add(f'<rect class="strip" x="{LEFT}" y="{_num(top)}" width="{PLOT_W}" height="{POOL_H}"/>')

    def y(value: float) -> float:
        return top + POOL_H * (1 - value / (peak * 1.1))

    for phase in h.pool_phases:
        x0, x1 = axis.x(phase.started_at), axis.x(phase.ended_at)
        svg.add(f'<rect class="phase" x="{_num(x0)}" y="{_num(top)}" width="{_num(x1 - x0)}" '
                f'height="{POOL_H}"><title>load {_esc(phase.name)}: {phase.clients} clients, '
                f"{phase.requests} requests, {phase.errors} errors</title></rect>"
                f'<text class="phase-label" x="{_num(x0 + 3)}" y="{_num(top + 11)}">'
                f"{_esc(phase.name)} ({phase.clients} clients)</text>")
    step = _nice_step(peak, 4)
    tick = 0.0
    while tick <= peak * 1.1:
        svg.add(f'<text class="tick" x="{LEFT - 6}" y="{_num(y(tick))}" dy="4" text-anchor="end">'
                f"{tick:g}</text>")
        tick += step
    if size:
        svg.add(f'<line class="pool-size" data-size="{size[0]:g}" x1="{LEFT}" x2="{LEFT + PLOT_W}" '
                f'y1="{_num(y(size[0]))}" y2="{_num(y(size[0]))}"/>')
    legend_x = LEFT + PLOT_W - 8
    for i, (name, (colour, points)) in enumerate(series.items()):
        if not points:
            continue
        path = " ".join(f"{_num(axis.x(at))},{_num(y(v))}" for at, v in points)
        # PostgreSQL's count should equal PgBouncer's: dashed, so both stay visible.
        dash = ' stroke-dasharray="5 4"' if name.startswith("PostgreSQL") else ""
        peak_of = max(v for _, v in points)
        svg.add(f'<polyline class="pool" data-series="{_esc(name)}" points="{path}" '
                f'stroke="{colour}"{dash}/>'
                f'<text class="legend" x="{legend_x}" y="{_num(top + 12 + 12 * i)}" '
                f'text-anchor="end" fill="{colour}">{_esc(name)} (peak {peak_of:g})</text>')
    svg.y = top + POOL_H + 6


def _status_colour(status: int | None) -> str:
    if status is None:
        return "#444"
    return STATUS_COLOURS.get(status, FAIL_COLOUR if status >= 500 else "#1f77b4")


def _health_panel(svg: _Svg, run: StoredRun, axis: Axis) -> None:
    h = run.history
    svg.title("Health endpoints per backend", "green 200, orange 503, dark: no answer; "
              "a watched endpoint's colour lasts until its next sample")
    lanes: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for s in sorted(h.health_samples, key=lambda s: s.at):
        lanes[(s.node, s.path)].append(s)
    for (node, path), samples in sorted(lanes.items()):
        y = _lane(svg, f"{node} {path}")
        watched = [s for s in samples if s.expectation == WATCHED]
        for start, until, status in _segments([(s.at, s.status) for s in watched],
                                              watched[-1].at if watched else 0):
            svg.add(f'<rect class="health" data-node="{_esc(node)}" data-path="{_esc(path)}" '
                    f'data-status="{status}" x="{_num(axis.x(start))}" y="{_num(y + 1)}" '
                    f'width="{_num(max(0.8, axis.x(until) - axis.x(start)))}" '
                    f'height="{LANE_H - 4}" '
                    f'fill="{_status_colour(status)}"><title>{_esc(path)} on {_esc(node)}: '
                    f"{status or 'no answer'} +{axis.rel(start):.3f}-{axis.rel(until):.3f} s"
                    "</title></rect>")
        for s in samples:
            if s.expectation != WATCHED:
                svg.add(f'<circle class="health-probe" data-status="{s.status}" '
                        f'cx="{_num(axis.x(s.at))}" cy="{_num(y + LANE_H / 2 - 1)}" r="3.5" '
                        f'fill="{_status_colour(s.status)}"><title>{_esc(path)} on {_esc(node)} '
                        f"({_esc(s.expectation)}): {s.status or 'no answer'} {_esc(s.body[:80])}"
                        "</title></circle>")
    svg.y += 4


def _time_ticks(svg: _Svg, axis: Axis, top: float) -> None:
    step = _nice_step(axis.span_s, 12)
    t = 0.0
    while t <= axis.span_s + 1e-9:
        x = _num(axis.x(axis.t0 + t))
        svg.add(f'<line class="grid" x1="{x}" x2="{x}" y1="{_num(top)}" y2="{_num(svg.y)}"/>'
                f'<text class="tick" x="{x}" y="{_num(svg.y + 14)}" text-anchor="middle">'
                f"{t:g} s</text>")
        t += step
    svg.y += 22


# A fault this lab no longer has (an old result) is drawn as every fault once was.
_OTHER_FAULT = Band("#d62728", "fault")


def _band(kind: str) -> Band:
    """How the timeline draws a fault: as its definition says."""
    return FAULTS.get(kind).band if kind in FAULTS else _OTHER_FAULT


def _overlays(svg: _Svg, run: StoredRun, axis: Axis, top: float, marks: list[Marker]) -> None:
    # Drawn over the panels, translucent and transparent to the mouse, so that the band
    # shows in every panel and the points under it keep their tooltips.
    bottom = svg.y - 22
    for i, (inject, heal) in enumerate(run.history.fault_windows()):
        end = heal.at if heal else axis.t0 + axis.span_s
        x0, x1 = axis.x(inject.at), axis.x(end)
        colour = _esc(_band(inject.fault).colour)
        label = f"{inject.fault} {inject.target}"
        tip = (f"{label}: injected +{axis.rel(inject.at):.3f} s ({inject.detail})"
               + (f", healed +{axis.rel(heal.at):.3f} s ({heal.detail})" if heal else
                  ", never healed"))
        svg.add(f'<g class="fault" data-fault="{_esc(inject.fault)}" '
                f'data-target="{_esc(inject.target)}" data-inject="{axis.rel(inject.at):.3f}" '
                f'data-heal="{"" if heal is None else format(axis.rel(heal.at), ".3f")}">'
                f'<rect class="fault-band" x="{_num(x0)}" y="{_num(top)}" '
                f'width="{_num(max(1.0, x1 - x0))}" height="{_num(bottom - top)}" '
                f'style="fill:{colour};stroke:{colour}"/>'
                f'<text class="fault-label" x="{_num(x0 + 3)}" y="{_num(top - 4 - 12 * (i % 2))}" '
                f'style="fill:{colour}">'
                f"{_esc(label)}<title>{_esc(tip)}</title></text></g>")
    for i, marker in enumerate(marks):
        x = axis.x(marker.at)
        right = x > LEFT + PLOT_W * 0.6
        svg.add(f'<g class="marker" data-check="{_esc(marker.check)}" '
                f'data-verdict="{marker.verdict.value}" data-t="{axis.rel(marker.at):.3f}">'
                f'<line class="marker-line {marker.verdict.value}" x1="{_num(x)}" x2="{_num(x)}" '
                f'y1="{_num(top)}" y2="{_num(bottom)}"/>'
                f'<text class="marker-label" x="{_num(x)}" dx="{-4 if right else 4}" '
                f'y="{_num(top + 58 + 13 * (i % 4))}" text-anchor="{"end" if right else "start"}">'
                f"{_esc(marker.label)}<title>{_esc(marker.label)}</title></text></g>")


def _legend(y: float, colours: dict[str, str], history: History, marks: bool) -> str:
    items = [(f"● {name}", colour) for name, colour in colours.items()]
    if any(r.method.upper() not in READS for r in history.requests):
        items.append(("■ write", "#444"))
    if history.requests:
        items += [("✕ failed", FAIL_COLOUR), ("△ unknown: no answer", UNKNOWN_COLOUR)]
    bands = {_band(e.fault) for e in history.faults}
    items += [(f"▮ {band.legend}: inject to heal", band.colour)
              for band in sorted(bands, key=lambda b: b.legend)]
    if marks:
        items.append(("┆ a check measured here", "#222"))
    x, out = float(LEFT), []
    for text, colour in items:
        out.append(f'<text class="legend" x="{_num(x)}" y="{_num(y)}" fill="{colour}">'
                   f"{_esc(text)}</text>")
        x += 6.2 * len(text) + 18
    return "".join(out)


def timeline(run: StoredRun) -> tuple[str, str]:
    """The timeline SVG and a sentence saying how the requests were drawn."""
    axis = _axis(run)
    colours = _colours(run.history)
    svg = _Svg()
    svg.y += 26  # a row for the fault labels
    top = svg.y
    drawn = ""
    h = run.history
    if h.requests:
        drawn = _requests_panel(svg, run, axis, colours)
        _share_panel(svg, run, axis, colours)
    if h.job_runs or h.lock_samples:
        _locks_panel(svg, run, axis, colours)
    if h.pool_samples or h.server_activity:
        _pool_panel(svg, run, axis)
    if h.health_samples:
        _health_panel(svg, run, axis)
    if svg.y - top < 40:
        svg.title("No time series were recorded in this run")
    _time_ticks(svg, axis, top + 26)
    body = list(svg.parts)
    svg.parts = []
    marks = markers(run)
    _overlays(svg, run, axis, top, marks)
    overlays = svg.parts
    legend = _legend(svg.y + 4, colours, h, bool(marks))
    height = svg.y + 14
    out = (f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
           f'height="{_num(height)}" viewBox="0 0 {WIDTH} {_num(height)}" '
           f'data-t0="{axis.t0:.6f}" data-span="{axis.span_s:.6f}" data-left="{LEFT}" '
           f'data-width="{PLOT_W}" role="img" aria-label="timeline of the run">'
           + "".join(body) + "".join(overlays) + legend + "</svg>")
    return out, drawn


# -- the tables --------------------------------------------------------------------------


def _verdict(verdict: Verdict | None) -> str:
    if verdict is None:
        return '<span class="verdict none">-</span>'
    return f'<span class="verdict {verdict.value}">{verdict.value}</span>'


def _checks_table(run: StoredRun) -> str:
    conformance = any(c.conformance is not None for c in run.checks)
    head = ("<tr><th>check</th><th>verdict</th>" + ("<th>conformance</th>" if conformance else "")
            + "<th>measured</th><th>expected</th><th>derivation</th></tr>")
    rows = []
    span = 5 + conformance
    for check in run.checks:
        details = "".join(f"<li>{_esc(d)}</li>" for d in check.details)
        rows.append(
            f'<tr class="check" data-name="{_esc(check.name)}" '
            f'data-verdict="{check.verdict.value}">'
            f"<td>{_esc(check.display)}</td><td>{_verdict(check.verdict)}</td>"
            + (f"<td>{_verdict(check.conformance)}</td>" if conformance else "")
            + f"<td>{_esc(check.measured)}</td><td>{_esc(check.expected)}</td>"
            f'<td class="derivation">{_esc(check.derivation)}'
            + (f"<details><summary>{len(check.details)} detail(s)</summary><ul>{details}</ul>"
               "</details>" if details else "") + "</td></tr>")
        predictions = {p.objective: p for p in run.predictions_for(check.name)}
        for objective in check.objectives:
            prediction = predictions.pop(objective.name, None)
            rows.append(
                f'<tr class="objective" data-check="{_esc(check.name)}" '
                f'data-name="{_esc(objective.name)}" data-verdict="{objective.verdict.value}">'
                f"<td>objective {_esc(objective.name)}</td><td>{_verdict(objective.verdict)}</td>"
                + ("<td></td>" if conformance else "")
                + f"<td>{_esc(objective.measured)}</td><td>{_esc(objective.threshold)}</td>"
                f'<td class="derivation">{_esc(objective.derivation)}'
                + (_prediction(prediction) if prediction else "") + "</td></tr>")
        for prediction in predictions.values():
            rows.append(f'<tr class="prediction"><td colspan="{span - 1}">prediction for '
                        f"{_esc(prediction.objective)} ({_esc(prediction.threshold)})</td>"
                        f'<td class="derivation">{_prediction(prediction)}</td></tr>')
    return f'<table class="checks">{head}{"".join(rows)}</table>'


def _prediction(p: Any) -> str:
    reach = {True: "reachable", False: "not reachable", None: "not decided by the configuration"}
    return (f'<div class="prediction">predicted: {_esc(p.predicted)} '
            f"({reach[p.reachable]}); {_esc(p.arithmetic)}</div>")


def _objectives_table(run: StoredRun) -> str:
    if not run.objectives:
        return ""
    rows = "".join(
        f'<tr data-name="{_esc(o.name)}"><td>{_esc(o.name)}</td><td>{_esc(o.threshold)}'
        f"{' ' + _esc(o.unit) if o.unit and o.unit not in o.threshold else ''}</td>"
        f"<td>{_esc(o.source)}</td><td>{_esc(o.reason or o.description)}</td></tr>"
        for o in run.objectives)
    return ("<h2>Objectives in force</h2><table class=\"objectives\"><tr><th>objective</th>"
            f"<th>threshold</th><th>source</th><th>what it bounds</th></tr>{rows}</table>")


def _counts_table(history: History) -> str:
    if not history.requests:
        return ""
    by_client: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in history.requests:
        by_client[f"{r.client} ({r.method} {r.path})"].append(r)
    rows = []
    for name, records in sorted(by_client.items()):
        outcomes = Counter(r.outcome for r in records)
        latencies = [r.latency_s for r in records if r.latency_s is not None]
        backends = Counter(r.backend for r in records if r.outcome is Outcome.OK and r.backend)
        quantiles = "".join(f"<td>{_seconds(percentile(latencies, q) if latencies else None)}</td>"
                            for q in (0.5, 0.9, 0.99))
        rows.append(
            f'<tr class="client" data-client="{_esc(name)}" data-n="{len(records)}">'
            f"<td>{_esc(name)}</td><td>{len(records):,}</td><td>{outcomes[Outcome.OK]:,}</td>"
            f"<td>{outcomes[Outcome.FAIL]:,}</td><td>{outcomes[Outcome.UNKNOWN]:,}</td>{quantiles}"
            f"<td>{_seconds(max(latencies) if latencies else None)}</td>"
            f"<td>{_esc(', '.join(f'{b} {n:,}' for b, n in sorted(backends.items())))}</td></tr>")
    return ("<h2>Requests</h2><p class=\"note\">Exact, from every request of the run "
            "(nearest-rank percentiles of the answered ones).</p><table class=\"counts\"><tr>"
            "<th>client</th><th>sent</th><th>ok</th><th>failed</th><th>unknown</th><th>p50</th>"
            "<th>p90</th><th>p99</th><th>max</th><th>ok answers by backend</th></tr>"
            f"{''.join(rows)}</table>")


def _value_html(value: Any) -> str:
    if isinstance(value, dict):
        rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_value_html(v)}</td></tr>"
                       for k, v in value.items())
        return f'<table class="kv">{rows}</table>'
    if isinstance(value, list | tuple) and all(not isinstance(v, dict | list) for v in value):
        return _esc(", ".join(str(v) for v in value))
    if isinstance(value, list | tuple):
        return "".join(f"<div>{_value_html(v)}</div>" for v in value)
    return _esc(json.dumps(value) if value is None or isinstance(value, bool) else value)


def _run_section(run: StoredRun) -> str:
    paragraphs = "".join(f"<p>{_esc(' '.join(p.split()))}</p>"
                         for p in run.description.split("\n\n") if p.strip())
    if run.steps:
        steps = "<ol class=\"steps\">" + "".join(f"<li>{_esc(s)}</li>" for s in run.steps) + "</ol>"
    else:
        steps = ("<ul class=\"steps\">" + "".join(
            f"<li>{_esc(e.phase.value)} {_esc(e.fault)} on {_esc(e.target)} at "
            f"+{e.at - run.started_at:.3f} s ({_esc(e.detail)})</li>" for e in run.history.faults)
            + "</ul>") if run.history.faults else "<p>No faults.</p>"
    durations = (_value_html({k: f"{v:g}" for k, v in run.durations.items()})
                 if run.durations else "")
    config = (f"<h3>Configuration of the lab</h3>{_value_html(run.config)}" if run.config else "")
    notes = ("<h3>Notes</h3><ul>" + "".join(f"<li>{_esc(n)}</li>" for n in run.notes) + "</ul>"
             if run.notes else "")
    return (f"<h2>The run</h2>{paragraphs}<h3>Steps</h3>{steps}"
            + (f"<h3>Values the waits and expectations used</h3>{durations}" if durations else "")
            + _load_section(run) + config + notes)


# The k6 files a person opens, in the order they would (the rest are listed after them).
_LOAD_FILES = ("dashboard.html", "result.json", "summary.json", "script.js", "k6.log")


def _load_section(run: StoredRun) -> str:
    if run.load is None:
        return ""
    base = run.load.directory.rstrip("/")
    files = [f for f in _LOAD_FILES if f in run.load.files]
    files += [f for f in run.load.files if f not in _LOAD_FILES]
    links = " · ".join(f'<a href="{_esc(base)}/{_esc(f)}">{_esc(f)}</a>' for f in files)
    return ("<h3>Load beside the steps</h3><p>k6 drove the load while the steps ran; its "
            "requests are the client <code>load</code> in the timeline and the checks above. "
            f"k6's own results, in <code>{_esc(base)}</code>: {links or 'no files were left'}."
            "</p>")


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;
max-width:1250px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
h3{font-size:14px;margin:16px 0 6px}
.meta{color:#555;margin:0 0 12px}.note{color:#555;margin:4px 0}
.verdict{font-weight:600;padding:1px 6px;border-radius:3px;color:#fff}
.verdict.pass{background:#2e7d32}.verdict.fail{background:#c62828}.verdict.unknown{background:#b26a00}
.verdict.none{color:#777}
table{border-collapse:collapse;margin:6px 0}
th,td{border:1px solid #ddd;padding:4px 6px;vertical-align:top;text-align:left}
th{background:#f4f4f4}table.checks td.derivation{font-size:12px;color:#444;max-width:420px}
tr.objective td{background:#fafafa;font-size:13px}tr.objective td:first-child{padding-left:22px}
.prediction{margin-top:4px;color:#345}table.kv{margin:0}table.kv th{font-weight:500}
svg.timeline{display:block;background:#fff}
svg .panel-title{font-size:13px;font-weight:600}
svg .panel-note{font-weight:400;fill:#666;font-size:11px}
svg .tick,svg .phase-label{font-size:10.5px;fill:#555}svg .legend{font-size:10.5px}
svg .group{font-size:11px;font-weight:600;fill:#333}
svg .grid{stroke:#eee;stroke-width:1}svg .strip,svg .lane{fill:#fafafa;stroke:#eee}
svg .fault-band{fill:#d62728;fill-opacity:.1;stroke:#d62728;stroke-opacity:.4;pointer-events:none}
svg .marker-line{pointer-events:none}
svg .fault-label{font-size:11px;fill:#a11;font-weight:600}svg .fault-key{fill:#d98c8c}
svg .marker-line{stroke:#222;stroke-dasharray:4 3;stroke-width:1.2}
svg .marker-line.fail{stroke:#c62828}svg .marker-line.unknown{stroke:#b26a00}
svg .marker-label{font-size:11px;fill:#222;paint-order:stroke;stroke:#fff;stroke-width:3px}
svg .overlap{fill:#d62728;fill-opacity:.85}svg .fenced{stroke:#000;stroke-width:2}
svg .phase{fill:#1f77b4;fill-opacity:.05}svg .pool{fill:none;stroke-width:1.5}
svg .pool-size{stroke:#000;stroke-dasharray:6 3}
"""


def render(run: StoredRun) -> str:
    """The whole page for one run."""
    svg, drawn = timeline(run)
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started_at))
    layers = "".join(f" {_esc(name)} {_verdict(v)}" for name, v in run.verdicts.items())
    meta = (f"lab {_esc(run.lab)} · seed {run.seed} · started {started} · wall time "
            f"{run.wall_s:.1f} s · lab version {_esc(run.lab_version or 'not recorded')}")
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_esc(run.scenario)}: {run.verdict.value}</title>"
        f"<meta name=\"viewport\" content=\"width=device-width\"><style>{_CSS}</style></head><body>"
        f'<h1 data-verdict="{run.verdict.value}">{_esc(run.scenario)} {_verdict(run.verdict)}'
        f"{'<small> ·' + layers + '</small>' if layers else ''}</h1>"
        f'<p class="meta">{meta}</p>'
        f'<h2>Timeline</h2><p class="note">Seconds from the run\'s start. {_esc(drawn)}</p>{svg}'
        f"<h2>Checks</h2>{_checks_table(run)}{_objectives_table(run)}{_counts_table(run.history)}"
        f"{_run_section(run)}</body></html>")


def write(directory: Path) -> Path:
    """Render ``<directory>/report.html`` from ``<directory>/result.json``; returns its path."""
    directory = Path(directory)
    path = directory / REPORT_FILE
    path.write_text(render(load(directory / RESULT_FILE)), encoding="utf-8")
    return path
