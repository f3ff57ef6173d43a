"""The history of a run: typed records that the workload, faults and log readers append to,
and that checks read. Times are Unix epoch seconds (floats) everywhere, so client records,
fault events and NGINX's own ``$msec`` share one clock (the containers share the host's).

As in Jepsen, an operation ends ``ok`` (it happened), ``fail`` (it certainly did not) or
``unknown`` (a timeout or a lost connection: it may have happened). A check must never
count ``unknown`` as "did not happen".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Outcome(StrEnum):
    OK = "ok"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One client request sent through NGINX, as the probe client saw it."""

    id: int
    client: str
    method: str
    path: str
    intended_at: float          # when the open-model schedule said it should leave
    sent_at: float              # when it actually left
    latency_s: float | None     # None when no answer came
    status: int | None
    backend: str | None         # X-Backend-Id of the answer
    outcome: Outcome
    error: str | None = None
    request_id: str | None = None  # X-Request-Id sent, joins with the access log

    @property
    def finished_at(self) -> float | None:
        return None if self.latency_s is None else self.sent_at + self.latency_s


class FaultPhase(StrEnum):
    INJECT = "inject"
    HEAL = "heal"


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """One half of a fault's inject/heal pair; ``at`` is when the action completed."""

    fault: str                  # kill, stop, freeze, partition, ...
    target: str                 # node name
    phase: FaultPhase
    at: float
    started_at: float           # when the action was issued
    detail: str = ""


@dataclass(frozen=True, slots=True)
class AccessLogEntry:
    """One line of NGINX's access log: what the load balancer itself recorded."""

    msec: float                 # $msec: when the request finished logging, epoch seconds
    request_time_s: float
    method: str
    uri: str
    status: int
    upstream_addrs: tuple[str, ...]      # every upstream tried, in order
    upstream_backends: tuple[str, ...]   # the same, resolved to node names ("?" if unknown)
    upstream_statuses: tuple[str, ...]
    upstream_times_s: tuple[float | None, ...]  # per attempt; None where nginx logged "-"
    limit_req_status: str       # PASSED, DELAYED, REJECTED, ... or "-"
    remote_addr: str = ""
    request_id: str = ""

    @property
    def started_at(self) -> float:
        return self.msec - self.request_time_s


@dataclass(frozen=True, slots=True)
class Mark:
    """A named instant in a run (phase boundaries: steady-before, faults, heal, ...)."""

    name: str
    at: float


@dataclass
class History:
    """Everything recorded during one scenario run; append-only while the run lasts."""

    requests: list[RequestRecord] = field(default_factory=list)
    faults: list[FaultEvent] = field(default_factory=list)
    access_log: list[AccessLogEntry] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)

    def mark(self, name: str, at: float) -> None:
        self.marks.append(Mark(name, at))

    def mark_at(self, name: str) -> float | None:
        """The time of the last mark with this name, if any."""
        for mark in reversed(self.marks):
            if mark.name == name:
                return mark.at
        return None

    def fault_windows(self, target: str | None = None) -> list[tuple[FaultEvent, FaultEvent | None]]:
        """Inject/heal pairs in time order (heal None while the fault is still active)."""
        pairs: list[tuple[FaultEvent, FaultEvent | None]] = []
        open_: dict[tuple[str, str], int] = {}
        for event in sorted(self.faults, key=lambda e: e.at):
            if target is not None and event.target != target:
                continue
            key = (event.fault, event.target)
            if event.phase is FaultPhase.INJECT:
                open_[key] = len(pairs)
                pairs.append((event, None))
            elif key in open_:
                index = open_.pop(key)
                pairs[index] = (pairs[index][0], event)
        return pairs
