"""The report's SVG drawing primitives: the page's geometry and colours, the time axis, a
canvas that stacks panels downwards, and the lanes and bars the panels are drawn with.

Everything here returns SVG markup as text, already escaped (``esc``); the page's template
inserts the finished timeline as it is (``lab.report.timeline``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lab.units import text_seconds

LEFT, RIGHT, PLOT_W = 150, 24, 990
WIDTH = LEFT + PLOT_W + RIGHT
SCATTER_H, STRIP_H, SHARE_H, POOL_H, LANE_H = 240, 16, 90, 140, 14

BACKEND_COLOURS = ("#3366cc", "#109618", "#990099", "#0099c6", "#8c564b", "#dd4477")
FAIL_COLOUR, UNKNOWN_COLOUR, OTHER_COLOUR = "#d62728", "#e69500", "#7f7f7f"
STATUS_COLOURS = {200: "#2ca02c", 503: "#ff7f0e"}
READS = frozenset({"GET", "HEAD"})


def esc(text: object) -> str:
    """Text made safe inside an element or a quoted attribute."""
    return html.escape(str(text), quote=True)


def num(value: float) -> str:
    """A coordinate to a tenth of a pixel, without trailing zeros."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def seconds_text(value: float | None) -> str:
    """A measured duration as the report prints it (the lab's one formatter, to the ms)."""
    return text_seconds(value, decimals=3)


@dataclass(frozen=True)
class Axis:
    """Run time (epoch seconds) to x pixels; 0 is the run's start."""

    t0: float
    span_s: float

    def x(self, at: float) -> float:
        """The x pixel of an epoch time."""
        return LEFT + (at - self.t0) / self.span_s * PLOT_W

    def rel(self, at: float) -> float:
        """Seconds from the run's start."""
        return at - self.t0


def nice_step(span: float, target: int) -> float:
    """A round step (1, 2 or 5 times a power of ten) cutting ``span`` into about ``target``."""
    raw = span / max(1, target)
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


class Canvas:
    """The timeline's SVG parts, and the y where the next panel starts."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.y = 8.0

    def add(self, text: str) -> None:
        """Append SVG markup."""
        self.parts.append(text)

    def title(self, text: str, note: str = "") -> None:
        """A panel's title (and a note beside it), moving y below it."""
        self.y += 18
        self.add(f'<text class="panel-title" x="{LEFT}" y="{num(self.y)}">{esc(text)}'
                 + (f'<tspan class="panel-note" dx="10">{esc(note)}</tspan>' if note else "")
                 + "</text>")
        self.y += 8


@dataclass(frozen=True)
class LogScale:
    """Seconds to y pixels on a log scale, clamped to [lo, hi]."""

    lo: float
    hi: float
    top: float
    height: float

    def y(self, seconds: float) -> float:
        """The y pixel of a latency."""
        value = min(max(seconds, self.lo), self.hi)
        lo, hi = math.log10(self.lo), math.log10(self.hi)
        share = (math.log10(value) - lo) / (hi - lo)
        return self.top + self.height * (1 - share)


def lane(svg: Canvas, label: str) -> float:
    """A labelled lane across the plot; returns its top."""
    y = svg.y
    svg.add(f'<rect class="lane" x="{LEFT}" y="{num(y)}" width="{PLOT_W}" height="{LANE_H - 2}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{num(y + LANE_H - 4)}" text-anchor="end">'
            f"{esc(label)}</text>")
    svg.y += LANE_H
    return y


def segments(points: Sequence[tuple[float, Any]], end: float) -> list[tuple[float, float, Any]]:
    """Consecutive equal values merged: (start, end, value), each lasting until the next."""
    out: list[tuple[float, float, Any]] = []
    for i, (at, value) in enumerate(points):
        until = points[i + 1][0] if i + 1 < len(points) else end
        if out and out[-1][2] == value and math.isclose(out[-1][1], at):
            out[-1] = (out[-1][0], until, value)
        else:
            out.append((at, until, value))
    return out


def bar(css: str, axis: Axis, start: float, stop: float, y: float, height: float, *,
        attrs: str = "", fill: str = "", title: str = "", minimum: float = 1.0) -> str:
    """One horizontal bar on the time axis, from ``start`` to ``stop`` (epoch seconds)."""
    x0 = axis.x(start)
    paint = f' fill="{fill}"' if fill else ""
    return (f'<rect class="{css}" {attrs} x="{num(x0)}" y="{num(y)}" '
            f'width="{num(max(minimum, axis.x(stop) - x0))}" height="{num(height)}"{paint}>'
            f"<title>{esc(title)}</title></rect>")
