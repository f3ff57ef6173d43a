"""The timeline's panels, each drawn onto the canvas below the previous one: the requests
(latency by intended send time, one point per request or aggregated into cells), each
backend's share of the answers, the jobs' runs and lock holders per node, the connection
pool, and the health endpoints' statuses.

Runs of more than ``POINT_LIMIT`` requests are drawn aggregated so that a 10-minute run stays
small and quick to open: answered requests become cells of ``CELL_W_PX`` x ``CELL_H_PX``
pixels (time x latency), one per backend, shaded by how many requests each holds
(``data-n``); failed and unknown requests stay single points up to ``FAILURE_POINT_LIMIT``.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from lab.checks import CHECKS
from lab.history import WATCHED, History, Outcome, RequestRecord
from lab.report.stored import StoredRun
from lab.report.svg import (
    FAIL_COLOUR,
    LANE_H,
    LEFT,
    OTHER_COLOUR,
    PLOT_W,
    POOL_H,
    READS,
    SCATTER_H,
    SHARE_H,
    STATUS_COLOURS,
    STRIP_H,
    UNKNOWN_COLOUR,
    Axis,
    Canvas,
    LogScale,
    bar,
    esc,
    lane,
    nice_step,
    num,
    seconds_text,
    segments,
)

POINT_LIMIT = 5_000           # requests drawn one by one up to this many
FAILURE_POINT_LIMIT = 2_000   # failed/unknown requests drawn one by one up to this many
CELL_W_PX, CELL_H_PX = 3, 4   # the aggregate's cell size


# -- requests ----------------------------------------------------------------------------


def _latency_scale(requests: Sequence[RequestRecord], top: float) -> LogScale:
    latencies = [r.latency_s for r in requests if r.latency_s]
    lo = 10 ** math.floor(math.log10(max(1e-4, min(latencies, default=1e-3))))
    hi = 10 ** math.ceil(math.log10(max(lo * 10, max(latencies, default=1.0))))
    return LogScale(lo, hi, top, SCATTER_H)


def _latency_label(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:g} µs"
    if seconds < 1:
        return f"{seconds * 1e3:g} ms"
    return f"{seconds:g} s"


def _request_title(r: RequestRecord, axis: Axis) -> str:
    answer = f"{r.status} in {seconds_text(r.latency_s)}" if r.latency_s is not None else \
        f"no answer ({r.error or 'unknown'})"
    return (f"#{r.id} {r.client} {r.method} {r.path} +{axis.rel(r.intended_at):.3f} s: "
            f"{answer}, {r.outcome.value}" + (f", served by {r.backend}" if r.backend else ""))


def _point(r: RequestRecord, axis: Axis, scale: LogScale, strip_y: float,
           colours: dict[str, str]) -> str:
    x = num(axis.x(r.intended_at))
    attrs = (f'data-id="{r.id}" data-outcome="{r.outcome.value}" '
             f'data-backend="{esc(r.backend or "")}" data-t="{axis.rel(r.intended_at):.3f}"')
    tip = f"<title>{esc(_request_title(r, axis))}</title>"
    if r.outcome is Outcome.OK:
        colour = colours.get(r.backend or "", OTHER_COLOUR)
        y = scale.y(r.latency_s or scale.lo)
        if r.method.upper() not in READS:  # writes as squares, so the two streams tell apart
            return (f'<rect class="req" {attrs} x="{num(float(x) - 2.2)}" y="{num(y - 2.2)}" '
                    f'width="4.4" height="4.4" fill="{colour}">{tip}</rect>')
        return (f'<circle class="req" {attrs} cx="{x}" cy="{num(y)}" '
                f'r="2.2" fill="{colour}">{tip}</circle>')
    if r.latency_s is None:  # no answer: drawn in the strip above the plot
        y = strip_y + STRIP_H / 2
        return (f'<path class="req unknown" {attrs} d="M{x} {num(y - 4)}l4 7h-8z" '
                f'fill="none" stroke="{UNKNOWN_COLOUR}" stroke-width="1.4">{tip}</path>')
    y = scale.y(r.latency_s)
    colour = FAIL_COLOUR if r.outcome is Outcome.FAIL else UNKNOWN_COLOUR
    return (f'<path class="req {r.outcome.value}" {attrs} d="M{num(float(x) - 3)} {num(y - 3)}'
            f'l6 6m0 -6l-6 6" stroke="{colour}" stroke-width="1.6">{tip}</path>')


def _cells(requests: Iterable[RequestRecord], axis: Axis, scale: LogScale, strip_y: float,
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
        out.append(f'<rect class="cell {kind}" data-n="{n}" data-key="{esc(key)}" '
                   f'x="{num(x)}" y="{num(y)}" width="{num(width)}" height="{height}" '
                   f'fill="{fill}" fill-opacity="{opacity:.2f}"/>')
    return out


def requests_panel(svg: Canvas, run: StoredRun, axis: Axis, colours: dict[str, str]) -> str:
    """Every request by intended send time and latency; returns how they were drawn."""
    requests = run.history.requests
    aggregate = len(requests) > POINT_LIMIT
    note = ("one point per request" if not aggregate else
            f"{len(requests):,} requests aggregated into {CELL_W_PX}x{CELL_H_PX} px cells "
            "(darker: more requests)")
    svg.title("Requests: latency by intended send time (log scale)", note)
    strip_y = svg.y
    scale = _latency_scale(requests, strip_y + STRIP_H + 4)
    svg.add(f'<rect class="strip" x="{LEFT}" y="{num(strip_y)}" width="{PLOT_W}" '
            f'height="{STRIP_H}"/><text class="tick" x="{LEFT - 6}" y="{num(strip_y + 12)}" '
            'text-anchor="end">no answer</text>')
    decade = scale.lo
    while decade <= scale.hi * 1.0001:
        y = num(scale.y(decade))
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
    return nice_step(want, 1)


def share_panel(svg: Canvas, run: StoredRun, axis: Axis, colours: dict[str, str]) -> None:
    """Each backend's share of the answers (and the failed and unknown), per time bin."""
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
    svg.add(f'<rect class="strip" x="{LEFT}" y="{num(top)}" width="{PLOT_W}" height="{SHARE_H}"/>')
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
            svg.add(f'<rect class="share" data-layer="{esc(name)}" data-n="{n}" '
                    f'x="{num(x0)}" y="{num(y)}" width="{num(max(0.5, x1 - x0))}" '
                    f'height="{num(h)}" fill="{fills.get(layer, OTHER_COLOUR)}">'
                    f"<title>+{i * width:g}-{(i + 1) * width:g} s: {esc(name)} {n} of "
                    f"{total}</title></rect>")
    for share in (0.5, 1.0):
        y = num(top + SHARE_H * (1 - share))
        svg.add(f'<text class="tick" x="{LEFT - 6}" y="{y}" dy="4" text-anchor="end">'
                f"{share:.0%}</text>")
    svg.y = top + SHARE_H + 6


# -- jobs and locks ---------------------------------------------------------------------


def _holder_lane(svg: Canvas, job: str, samples: Sequence[Any], axis: Axis,
                 colours: dict[str, str]) -> None:
    y = lane(svg, "holder in Redis")
    points = [(s.received_at, s.holder) for s in samples]
    for start, until, holder in segments(points, samples[-1].received_at):
        if holder is not None:
            svg.add(bar("holder", axis, start, until, y + 3, LANE_H - 8, minimum=0.5,
                        attrs=f'data-job="{esc(job)}" data-node="{esc(holder)}" '
                              'fill-opacity="0.6"',
                        fill=colours.get(holder, OTHER_COLOUR),
                        title=f"Redis names {holder} as the holder of {job} "
                              f"+{axis.rel(start):.2f}-{axis.rel(until):.2f} s"))


def _run_lane(svg: Canvas, job: str, node: str, runs: Sequence[Any], history: History,
              axis: Axis, colours: dict[str, str]) -> None:
    end = axis.t0 + axis.span_s
    y = lane(svg, node)

    def finish(run: Any) -> float:
        return run.finished_at if run.finished_at is not None else end

    for run in (r for r in runs if r.node == node):
        until = ("never finished (outcome unknown)" if run.finished_at is None
                 else f"+{axis.rel(run.finished_at):.3f} s")
        dashed = ' stroke-dasharray="3 2"' if run.finished_at is None else ""
        svg.add(bar("job-run", axis, run.started_at, finish(run), y + 1, LANE_H - 4,
                    attrs=f'data-job="{esc(job)}" data-node="{esc(node)}" '
                          f'data-outcome="{esc(run.outcome)}" stroke="#333" '
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
                svg.add(bar("overlap", axis, start, stop, y + 1, LANE_H - 4,
                            attrs=f'data-job="{esc(job)}" data-node="{esc(node)}"',
                            title=f"overlaps {other.node}'s run {other.id} for "
                                  f"{stop - start:.3f} s"))
    for refusal in history.fencing_rejections:
        if refusal.job == job and refusal.node == node:
            x, cy = axis.x(refusal.at), y + LANE_H / 2 - 1
            svg.add(f'<path class="fenced" data-job="{esc(job)}" data-node="{esc(node)}" '
                    f'd="M{num(x - 4)} {num(cy - 4)}l8 8m0 -8l-8 8"><title>fencing refused '
                    f"{esc(node)}'s write (token {refusal.token}, the resource had "
                    f"{refusal.last_token}) at +{axis.rel(refusal.at):.3f} s</title></path>")


def locks_panel(svg: Canvas, run: StoredRun, axis: Axis, colours: dict[str, str]) -> None:
    """Per job: Redis's holder, each node's runs, their overlaps and fencing refusals."""
    h = run.history
    svg.title("Job runs per node", "red: runs of one job overlapping; ✕: write refused by fencing")
    for job in sorted({j.job for j in h.job_runs} | {s.job for s in h.lock_samples}):
        runs = sorted((j for j in h.job_runs if j.job == job), key=lambda j: j.started_at)
        samples = sorted((s for s in h.lock_samples if s.job == job), key=lambda s: s.received_at)
        svg.add(f'<text class="group" x="{LEFT - 6}" y="{num(svg.y + 10)}" text-anchor="end">'
                f"{esc(job)}</text>")
        svg.y += 13
        if samples:
            _holder_lane(svg, job, samples, axis, colours)
        for node in sorted({j.node for j in runs}):
            _run_lane(svg, job, node, runs, h, axis, colours)
    svg.y += 4


# -- the connection pool ----------------------------------------------------------------


def _pool_size(run: StoredRun) -> tuple[float, str] | None:
    pgbouncer = (run.config or {}).get("pgbouncer")
    if isinstance(pgbouncer, dict) and isinstance(pgbouncer.get("default_pool_size"), int | float):
        return float(pgbouncer["default_pool_size"]), "default_pool_size"
    for check in run.checks:
        value = CHECKS.get(check.name).pool_size if check.name in CHECKS else None
        if value is not None and check.value(value) is not None:
            return float(check.value(value) or 0), f"the {check.name} check's {value}"
    return None


def pool_panel(svg: Canvas, run: StoredRun, axis: Axis) -> None:
    """PgBouncer's connections and queue (and PostgreSQL's count) against the pool size."""
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
    svg.add(f'<rect class="strip" x="{LEFT}" y="{num(top)}" width="{PLOT_W}" height="{POOL_H}"/>')

    def y(value: float) -> float:
        return top + POOL_H * (1 - value / (peak * 1.1))

    for phase in h.pool_phases:
        x0, x1 = axis.x(phase.started_at), axis.x(phase.ended_at)
        svg.add(f'<rect class="phase" x="{num(x0)}" y="{num(top)}" width="{num(x1 - x0)}" '
                f'height="{POOL_H}"><title>load {esc(phase.name)}: {phase.clients} clients, '
                f"{phase.requests} requests, {phase.errors} errors</title></rect>"
                f'<text class="phase-label" x="{num(x0 + 3)}" y="{num(top + 11)}">'
                f"{esc(phase.name)} ({phase.clients} clients)</text>")
    step = nice_step(peak, 4)
    tick = 0.0
    while tick <= peak * 1.1:
        svg.add(f'<text class="tick" x="{LEFT - 6}" y="{num(y(tick))}" dy="4" text-anchor="end">'
                f"{tick:g}</text>")
        tick += step
    if size:
        svg.add(f'<line class="pool-size" data-size="{size[0]:g}" x1="{LEFT}" x2="{LEFT + PLOT_W}" '
                f'y1="{num(y(size[0]))}" y2="{num(y(size[0]))}"/>')
    legend_x = LEFT + PLOT_W - 8
    for i, (name, (colour, points)) in enumerate(series.items()):
        if not points:
            continue
        path = " ".join(f"{num(axis.x(at))},{num(y(v))}" for at, v in points)
        # PostgreSQL's count should equal PgBouncer's: dashed, so both stay visible.
        dash = ' stroke-dasharray="5 4"' if name.startswith("PostgreSQL") else ""
        peak_of = max(v for _, v in points)
        svg.add(f'<polyline class="pool" data-series="{esc(name)}" points="{path}" '
                f'stroke="{colour}"{dash}/>'
                f'<text class="legend" x="{legend_x}" y="{num(top + 12 + 12 * i)}" '
                f'text-anchor="end" fill="{colour}">{esc(name)} (peak {peak_of:g})</text>')
    svg.y = top + POOL_H + 6


# -- health endpoints --------------------------------------------------------------------


def _status_colour(status: int | None) -> str:
    if status is None:
        return "#444"
    return STATUS_COLOURS.get(status, FAIL_COLOUR if status >= 500 else "#1f77b4")


def health_panel(svg: Canvas, run: StoredRun, axis: Axis) -> None:
    """Each node's health endpoints: a watched one's status over time, probes as dots."""
    h = run.history
    svg.title("Health endpoints per backend", "green 200, orange 503, dark: no answer; "
              "a watched endpoint's colour lasts until its next sample")
    lanes: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for s in sorted(h.health_samples, key=lambda s: s.at):
        lanes[(s.node, s.path)].append(s)
    for (node, path), samples in sorted(lanes.items()):
        y = lane(svg, f"{node} {path}")
        watched = [s for s in samples if s.expectation == WATCHED]
        for start, until, status in segments([(s.at, s.status) for s in watched],
                                             watched[-1].at if watched else 0):
            svg.add(f'<rect class="health" data-node="{esc(node)}" data-path="{esc(path)}" '
                    f'data-status="{status}" x="{num(axis.x(start))}" y="{num(y + 1)}" '
                    f'width="{num(max(0.8, axis.x(until) - axis.x(start)))}" '
                    f'height="{LANE_H - 4}" '
                    f'fill="{_status_colour(status)}"><title>{esc(path)} on {esc(node)}: '
                    f"{status or 'no answer'} +{axis.rel(start):.3f}-{axis.rel(until):.3f} s"
                    "</title></rect>")
        for s in samples:
            if s.expectation != WATCHED:
                svg.add(f'<circle class="health-probe" data-status="{s.status}" '
                        f'cx="{num(axis.x(s.at))}" cy="{num(y + LANE_H / 2 - 1)}" r="3.5" '
                        f'fill="{_status_colour(s.status)}"><title>{esc(path)} on {esc(node)} '
                        f"({esc(s.expectation)}): {s.status or 'no answer'} {esc(s.body[:80])}"
                        "</title></circle>")
    svg.y += 4

