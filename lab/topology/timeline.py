"""Where `lab up` spends its time: per node, when its container was created and started and
when its readiness probe first passed, plus the preparation phases before the first node.

Times are seconds since `up` began (``time.monotonic``). ``TimelineRecorder`` is written to
from the start threads; ``UpTimeline`` is its frozen result, printed by ``lab up --timings``
and by ``bench/topology.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

BAR_WIDTH = 40


@dataclass(frozen=True)
class Phase:
    """A step before or around the nodes (orphan removal, image check, network, ...)."""

    name: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class NodeTimeline:
    """One node's start: each time is None when the node never got that far."""

    node: str
    role: str
    created_s: float | None
    started_s: float | None
    probing_s: float | None   # first readiness probe sent (after the node's dependencies)
    ready_s: float | None     # first probe that passed
    probes: int               # probes sent until then


@dataclass(frozen=True)
class UpTimeline:
    total_s: float
    phases: tuple[Phase, ...]
    nodes: tuple[NodeTimeline, ...]

    def lines(self) -> list[str]:
        """A text table, a bar per row: ``-`` created (or a phase), ``=`` started, ``|`` ready."""
        scale = BAR_WIDTH / max(self.total_s, 1e-9)

        def col(value: float | None) -> str:
            return "      -" if value is None else f"{value:7.2f}"

        def bar(*segments: tuple[float | None, float | None, str]) -> str:
            cells = [" "] * (BAR_WIDTH + 1)
            for start, end, char in segments:
                if start is None:
                    continue
                stop = self.total_s if end is None else end
                for i in range(int(start * scale), int(stop * scale) + 1):
                    cells[min(i, BAR_WIDTH)] = char
            return "".join(cells).rstrip()

        out = [f"{'phase':10} {'start':>7} {'end':>7}"]
        for p in self.phases:
            out.append(f"{p.name:10} {p.start_s:7.2f} {p.end_s:7.2f}{' ' * 24}  "
                       f"{bar((p.start_s, p.end_s, '-'))}")
        out.append(f"{'node':10} {'created':>7} {'started':>7} {'probing':>7} {'ready':>7} "
                   f"{'probes':>6}  0 s{' ' * (BAR_WIDTH - 8)}{self.total_s:5.2f} s")
        for n in self.nodes:
            ready = (n.ready_s, n.ready_s, "|") if n.ready_s is not None else (None, None, "")
            out.append(f"{n.node:10} {col(n.created_s)} {col(n.started_s)} {col(n.probing_s)} "
                       f"{col(n.ready_s)} {n.probes:6d}  "
                       + bar((n.created_s, n.started_s or n.ready_s, "-"),
                             (n.started_s, n.ready_s, "="), ready))
        out.append(f"{'all ready':10} {self.total_s:7.2f}")
        return out

    def as_dict(self) -> dict:
        """The JSON form (seconds rounded to milliseconds)."""
        def r(value: float | None) -> float | None:
            return None if value is None else round(value, 3)
        return {
            "total_s": r(self.total_s),
            "phases": [{"name": p.name, "start_s": r(p.start_s), "end_s": r(p.end_s)}
                       for p in self.phases],
            "nodes": [{"node": n.node, "role": n.role, "created_s": r(n.created_s),
                       "started_s": r(n.started_s), "probing_s": r(n.probing_s),
                       "ready_s": r(n.ready_s), "probes": n.probes} for n in self.nodes],
        }


_EVENTS = ("created", "started", "probing", "ready")


class TimelineRecorder:
    """Collects the events of one `up`; safe to call from several threads."""

    def __init__(self, origin: float | None = None):
        self.origin = time.monotonic() if origin is None else origin
        self._lock = threading.Lock()
        self._phases: list[Phase] = []
        self._events: dict[str, dict[str, float]] = {}
        self._probes: dict[str, int] = {}

    def now(self) -> float:
        return time.monotonic() - self.origin

    def mark(self, node: str, event: str) -> None:
        """Record the first time ``node`` reached ``event`` (created, started, probing, ready)."""
        if event not in _EVENTS:
            raise ValueError(f"unknown timeline event {event!r}")
        at = self.now()
        with self._lock:
            self._events.setdefault(node, {}).setdefault(event, at)

    def probed(self, node: str) -> None:
        """Count one readiness probe of ``node``."""
        with self._lock:
            self._probes[node] = self._probes.get(node, 0) + 1

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = self.now()
        try:
            yield
        finally:
            with self._lock:
                self._phases.append(Phase(name, start, self.now()))

    def result(self, roles: Mapping[str, str]) -> UpTimeline:
        """The timeline so far, one row per node in ``roles`` order."""
        with self._lock:
            nodes = tuple(
                NodeTimeline(node, role, *(self._events.get(node, {}).get(e) for e in _EVENTS),
                             probes=self._probes.get(node, 0))
                for node, role in roles.items())
            phases = tuple(sorted(self._phases, key=lambda p: p.start_s))
        return UpTimeline(self.now(), phases, nodes)
