"""The run's timeline: one SVG on one time axis from the run's start (seconds).

Every client request as a point (x its intended send time, y its latency on a log scale,
coloured by the backend that answered; failures as red crosses, unknowns as amber triangles in
the "no answer" strip), each backend's share of the answers, the faults shaded from inject to
heal (each as its fault's definition draws it, ``FaultDef.band``), and a marker at each moment
a check measured (as its check's entry says, ``CheckDef.marker``). Lock scenarios add each
node's job runs (overlaps red, fencing refusals marked), pool scenarios the pool's connections
and queue, health watches each endpoint's status (the panels: ``lab.report.panels``).
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.checks import CHECKS, Verdict
from lab.checks.registry import After, TimelineMark
from lab.faults import FAULTS, Band
from lab.history import FaultEvent, History
from lab.report.panels import (
    health_panel,
    locks_panel,
    pool_panel,
    requests_panel,
    share_panel,
)
from lab.report.stored import StoredCheck, StoredRun
from lab.report.svg import (
    BACKEND_COLOURS,
    FAIL_COLOUR,
    LEFT,
    PLOT_W,
    READS,
    UNKNOWN_COLOUR,
    WIDTH,
    Axis,
    Canvas,
    esc,
    nice_step,
    num,
)


def axis_of(run: StoredRun) -> Axis:
    """The run's time axis: from its start (or anything recorded before it) to the last thing
    recorded."""
    # The records of several streams and samplers are not in time order.
    h = run.history
    ends = [run.finished_at, *(r.finished_at or r.sent_at for r in h.requests),
            *(r.intended_at for r in h.requests), *(e.at for e in h.faults),
            *(j.finished_at or j.started_at for j in h.job_runs),
            *(s.at for s in h.pool_samples), *(s.at for s in h.health_samples),
            *(s.received_at for s in h.lock_samples)]
    starts = [run.started_at, *(r.intended_at for r in h.requests), *(e.at for e in h.faults)]
    t0 = min(starts)
    return Axis(t0, max(1.0, max(ends) - t0))


def colours_of(history: History) -> dict[str, str]:
    """One colour per backend or node, the same in every panel."""
    names = sorted({r.backend for r in history.requests if r.backend}
                   | {j.node for j in history.job_runs}
                   | {s.holder for s in history.lock_samples if s.holder})
    return {name: BACKEND_COLOURS[i % len(BACKEND_COLOURS)] for i, name in enumerate(names)}


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

# -- the timeline --------------------------------------------------------------------------


def _time_ticks(svg: Canvas, axis: Axis, top: float) -> None:
    step = nice_step(axis.span_s, 12)
    t = 0.0
    while t <= axis.span_s + 1e-9:
        x = num(axis.x(axis.t0 + t))
        svg.add(f'<line class="grid" x1="{x}" x2="{x}" y1="{num(top)}" y2="{num(svg.y)}"/>'
                f'<text class="tick" x="{x}" y="{num(svg.y + 14)}" text-anchor="middle">'
                f"{t:g} s</text>")
        t += step
    svg.y += 22


# A fault this lab no longer has (an old result) is drawn as every fault once was.
_OTHER_FAULT = Band("#d62728", "fault")


def _band(kind: str) -> Band:
    """How the timeline draws a fault: as its definition says."""
    return FAULTS.get(kind).band if kind in FAULTS else _OTHER_FAULT


def _overlays(svg: Canvas, run: StoredRun, axis: Axis, top: float, marks: list[Marker]) -> None:
    # Drawn over the panels, translucent and transparent to the mouse, so that the band
    # shows in every panel and the points under it keep their tooltips.
    bottom = svg.y - 22
    for i, (inject, heal) in enumerate(run.history.fault_windows()):
        end = heal.at if heal else axis.t0 + axis.span_s
        x0, x1 = axis.x(inject.at), axis.x(end)
        colour = esc(_band(inject.fault).colour)
        label = f"{inject.fault} {inject.target}"
        tip = (f"{label}: injected +{axis.rel(inject.at):.3f} s ({inject.detail})"
               + (f", healed +{axis.rel(heal.at):.3f} s ({heal.detail})" if heal else
                  ", never healed"))
        svg.add(f'<g class="fault" data-fault="{esc(inject.fault)}" '
                f'data-target="{esc(inject.target)}" data-inject="{axis.rel(inject.at):.3f}" '
                f'data-heal="{"" if heal is None else format(axis.rel(heal.at), ".3f")}">'
                f'<rect class="fault-band" x="{num(x0)}" y="{num(top)}" '
                f'width="{num(max(1.0, x1 - x0))}" height="{num(bottom - top)}" '
                f'style="fill:{colour};stroke:{colour}"/>'
                f'<text class="fault-label" x="{num(x0 + 3)}" y="{num(top - 4 - 12 * (i % 2))}" '
                f'style="fill:{colour}">'
                f"{esc(label)}<title>{esc(tip)}</title></text></g>")
    for i, marker in enumerate(marks):
        x = axis.x(marker.at)
        right = x > LEFT + PLOT_W * 0.6
        svg.add(f'<g class="marker" data-check="{esc(marker.check)}" '
                f'data-verdict="{marker.verdict.value}" data-t="{axis.rel(marker.at):.3f}">'
                f'<line class="marker-line {marker.verdict.value}" x1="{num(x)}" x2="{num(x)}" '
                f'y1="{num(top)}" y2="{num(bottom)}"/>'
                f'<text class="marker-label" x="{num(x)}" dx="{-4 if right else 4}" '
                f'y="{num(top + 58 + 13 * (i % 4))}" text-anchor="{"end" if right else "start"}">'
                f"{esc(marker.label)}<title>{esc(marker.label)}</title></text></g>")


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
        out.append(f'<text class="legend" x="{num(x)}" y="{num(y)}" fill="{colour}">'
                   f"{esc(text)}</text>")
        x += 6.2 * len(text) + 18
    return "".join(out)


def timeline(run: StoredRun) -> tuple[str, str]:
    """The timeline SVG and a sentence saying how the requests were drawn."""
    axis = axis_of(run)
    colours = colours_of(run.history)
    svg = Canvas()
    svg.y += 26  # a row for the fault labels
    top = svg.y
    drawn = ""
    h = run.history
    if h.requests:
        drawn = requests_panel(svg, run, axis, colours)
        share_panel(svg, run, axis, colours)
    if h.job_runs or h.lock_samples:
        locks_panel(svg, run, axis, colours)
    if h.pool_samples or h.server_activity:
        pool_panel(svg, run, axis)
    if h.health_samples:
        health_panel(svg, run, axis)
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
           f'height="{num(height)}" viewBox="0 0 {WIDTH} {num(height)}" '
           f'data-t0="{axis.t0:.6f}" data-span="{axis.span_s:.6f}" data-left="{LEFT}" '
           f'data-width="{PLOT_W}" role="img" aria-label="timeline of the run">'
           + "".join(body) + "".join(overlays) + legend + "</svg>")
    return out, drawn
