"""Where the time goes during a load: CPU and memory per container (Docker's stats API), the
generator's own CPU, and which node ran out of compute first.

Each container is read on its own stats stream (one sample a second, from its own thread),
bounded by the run's deadline and stopped with the run. A node counts as saturated in an
interval where it used at least ``SATURATED`` of its CPU quota (or, without a quota, of the
machine's cores), or where the kernel throttled it in most CFS periods while it used at least
half of its quota.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from lab.engine import ContainerStats
from lab.history import ContainerSample, PoolSample

SATURATED = 0.9  # of the quota, in one interval
THROTTLED = 0.5  # of the CFS periods in one interval ...
BUSY = 0.5  # ... while using at least this share of the quota
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class StatsSampler:
    """Samples containers (name -> node) on Docker's stats streams until stopped."""

    def __init__(
        self,
        stream: Callable[[str], Iterable[ContainerStats]],
        containers: Mapping[str, str],
        *,
        max_duration_s: float,
    ):
        self._stream = stream
        self.containers = dict(containers)
        self.max_duration_s = max_duration_s
        self._lock = threading.Lock()
        self._samples: list[ContainerSample] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def add(self, container: str, node: str) -> None:
        """Sample one more container (the generator's, once it exists)."""
        self.containers[container] = node
        if self._threads:
            self._spawn(container, node)

    def start(self) -> StatsSampler:
        for container, node in self.containers.items():
            self._spawn(container, node)
        return self

    def _spawn(self, container: str, node: str) -> None:
        thread = threading.Thread(
            target=self._run, args=(container, node), daemon=True, name=f"stats-{node}"
        )
        self._threads.append(thread)
        thread.start()

    def _run(self, container: str, node: str) -> None:
        deadline = time.monotonic() + self.max_duration_s
        for stats in self._stream(container):
            sample = ContainerSample(
                stats.at,
                node,
                stats.cpu_s,
                stats.memory_bytes,
                stats.throttled_periods,
                stats.periods,
            )
            with self._lock:
                self._samples.append(sample)
            if self._stop.is_set() or time.monotonic() > deadline:
                return

    def stop(self) -> None:
        """Stop every stream (each ends at its next sample, within about a second)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(3.0)

    @property
    def samples(self) -> list[ContainerSample]:
        with self._lock:
            return sorted(self._samples, key=lambda s: (s.node, s.at))


class ProcessSampler:
    """The generator's own CPU and memory when it runs on the host (``/proc/<pid>``)."""

    def __init__(
        self, pid: int, node: str = "k6", interval_s: float = 1.0, max_duration_s: float = 3600.0
    ):
        self.pid, self.node, self.interval_s = pid, node, interval_s
        self.max_duration_s = max_duration_s
        self._samples: list[ContainerSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="stats-k6")

    def read(self) -> ContainerSample | None:
        try:
            with open(f"/proc/{self.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            rss_pages = int(fields[21])
        except (OSError, IndexError, ValueError):
            return None
        cpu_s = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime + stime
        return ContainerSample(
            time.time(), self.node, cpu_s, rss_pages * os.sysconf("SC_PAGE_SIZE")
        )

    def start(self) -> ProcessSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_duration_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            sample = self.read()
            if sample is None:
                return
            self._samples.append(sample)
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2 * self.interval_s)

    @property
    def samples(self) -> list[ContainerSample]:
        return list(self._samples)


@dataclass(frozen=True)
class NodeLoad:
    """One node over the run: CPU (cores) against its quota, memory, first saturation."""

    node: str
    quota_cpus: float | None  # the CFS quota in force during the load (None: unlimited)
    mean_cpus: float
    peak_cpus: float
    saturated_s: float  # time spent saturated
    first_saturated_at: float | None  # epoch s
    throttled_share: float  # of the CFS periods while the quota was in force
    memory_start: int
    memory_end: int
    memory_peak: int

    @property
    def memory_growth(self) -> int:
        return self.memory_end - self.memory_start


def node_loads(
    samples: Sequence[ContainerSample],
    quotas: Mapping[str, float | None],
    cores: int,
    since: float,
    until: float,
) -> list[NodeLoad]:
    """Per node, from its samples between ``since`` and ``until`` (the load's own span)."""
    by_node: dict[str, list[ContainerSample]] = {}
    for sample in samples:
        by_node.setdefault(sample.node, []).append(sample)
    out = []
    for node, series in sorted(by_node.items()):
        series = sorted(series, key=lambda s: s.at)
        inside = [s for s in series if since - 1.5 <= s.at <= until + 1.5]
        if len(inside) < 2:
            continue
        limit = quotas.get(node)
        capacity = limit if limit else float(cores)
        saturated = 0.0
        first = None
        cpus = []
        for a, b in itertools.pairwise(inside):
            span = b.at - a.at
            if span <= 0:
                continue
            used = (b.cpu_s - a.cpu_s) / span
            cpus.append(used)
            periods = b.periods - a.periods
            throttled = (b.throttled_periods - a.throttled_periods) / periods if periods > 0 else 0
            # Throttling counts only with real use: a node that wakes for a moment in one
            # 10 ms period and is throttled there has "most periods throttled" at 1% CPU.
            if used >= SATURATED * capacity or (throttled >= THROTTLED and used >= BUSY * capacity):
                saturated += span
                first = first if first is not None else a.at
        total_span = inside[-1].at - inside[0].at
        periods = inside[-1].periods - inside[0].periods
        memory = [s.memory_bytes for s in inside]
        out.append(
            NodeLoad(
                node=node,
                quota_cpus=limit,
                mean_cpus=(inside[-1].cpu_s - inside[0].cpu_s) / total_span
                if total_span > 0
                else 0.0,
                peak_cpus=max(cpus, default=0.0),
                saturated_s=saturated,
                first_saturated_at=first,
                throttled_share=(
                    (inside[-1].throttled_periods - inside[0].throttled_periods) / periods
                    if periods > 0
                    else 0.0
                ),
                memory_start=memory[0],
                memory_end=memory[-1],
                memory_peak=max(memory),
            )
        )
    return out


def pool_waiting_since(samples: Sequence[PoolSample]) -> float | None:
    """When PgBouncer first had clients waiting for a server connection (its pool was full)."""
    return next((s.at for s in sorted(samples, key=lambda s: s.at) if s.cl_waiting > 0), None)


def first_saturated(loads: Sequence[NodeLoad], generator: str = "k6") -> NodeLoad | None:
    """The system node (not the generator) that saturated first, if any did."""
    nodes = [n for n in loads if n.node != generator and n.first_saturated_at is not None]
    return min(nodes, key=lambda n: n.first_saturated_at or 0.0, default=None)
