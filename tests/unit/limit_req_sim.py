"""A simulated NGINX in front of a limit_req zone, with NGINX's clocks: synthetic access logs.

It plays the real algorithm (``lab.checks.limit_req_model.step``) the way nginx 1.22.1 runs
it (lab/checks/limit_req_replay.py has the source lines):

- clients send at their schedule plus a send jitter (timer slack, a busy client loop);
- each request reaches one of ``workers`` worker processes; an idle worker wakes a little
  after an event (scheduler latency), updates its clocks once (wall and monotonic, truncated
  to ms separately, with a random sub-millisecond offset between them) and handles every
  event ready then, one after the other, without updating its clocks again; a handler can
  stall (the worker is preempted), so later events of the pass are handled on a stale clock;
- the zone is shared: requests are decided in real time order across workers, each on the
  monotonic ms its worker cached; a rejection is logged in the same pass (a POST's rejection
  sometimes a pass later, its body discarded first); an acceptance is logged when the
  upstream's answer is handled, in a later pass;
- the log records the wall ms: ``$msec`` and ``$request_time`` as NGINX computes them, the
  worker's ``$pid``.

Nothing here reads the check: the check's alternatives are derived from the source, the
simulator only plays the mechanisms.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lab.checks.limit_req_model import BucketState, Limiter, step
from lab.history import AccessLogEntry

EPOCH_MS = 1_700_000_000_000
PIDS = (7, 8, 9, 10)


@dataclass(frozen=True)
class Machine:
    """How loaded the machine running clients and NGINX is."""

    name: str
    send_slack_ms: float        # every send is late by up to this (uniform): timer slack
    late_p: float               # the share of sends late by more: a busy client loop
    late_mean_ms: float         # their extra lateness (exponential)
    wake_ms: float              # an idle worker wakes within this of an event (uniform)
    stall_p: float              # the chance a handler is preempted
    stall_mean_ms: float        # for this long (exponential)


# An idle machine: the client's timer alone. asyncio's epoll selector rounds every timeout up
# to a whole millisecond (selectors.EpollSelector.select), so a send is 0-1 ms late.
QUIET = Machine("quiet", send_slack_ms=1.0, late_p=0.0, late_mean_ms=0.0, wake_ms=0.05,
                stall_p=0.0, stall_mean_ms=0.0)
# Calibrated on a `lab run rate-limits` on this 2-core machine: its API stream (10 ms
# apart) arrived 9-11 ms apart for 70 % of the gaps, the rest 3-8 or 12-17 ms.
LOADED = Machine("loaded", send_slack_ms=1.2, late_p=0.15, late_mean_ms=3.0, wake_ms=0.2,
                 stall_p=0.02, stall_mean_ms=2.0)
MACHINES = (QUIET, LOADED)


@dataclass(frozen=True)
class Send:
    """One request a client means to send."""

    key: str
    at_ms: float
    method: str = "GET"
    uri: str = "/api/x"
    body: bool = False          # a POST with a body: its rejection may log a pass later


@dataclass
class _Request:
    send: Send
    worker: int
    arrives_ms: float
    created_wall: int = 0
    outcome: str = ""
    delay_ms: int = 0


@dataclass
class _Worker:
    pid: int
    ready: list[tuple[float, int, str, _Request]] = field(default_factory=list)
    busy: bool = False
    wall: int = 0
    mono: int = 0


def _zone_of(uri: str, zones: Mapping[str, Limiter]) -> str:
    """The longest location prefix of ``zones`` that ``uri`` starts with."""
    return max((loc for loc in zones if uri.startswith(loc)), key=len)


def _zones_by_uri(sends: Sequence[Send], zones: Mapping[str, Limiter]) -> dict[str, str]:
    return {uri: _zone_of(uri, zones) for uri in {s.uri for s in sends}}


class _Nginx:
    def __init__(self, zones: Mapping[str, Limiter], rng: random.Random, machine: Machine,
                 workers: int):
        self.zones = zones
        self.rng = rng
        self.machine = machine
        self.workers = [_Worker(PIDS[i]) for i in range(workers)]
        self.wall_phase = rng.random()
        self.mono_phase = rng.random()
        self.nodes: dict[tuple[str, str], BucketState] = {}
        self.events: list[tuple[float, int, str, object]] = []
        self.seq = itertools.count()
        self.log: list[AccessLogEntry] = []

    def push(self, at: float, kind: str, payload: object) -> None:
        heapq.heappush(self.events, (at, next(self.seq), kind, payload))

    def run(self, requests: Sequence[_Request]) -> list[AccessLogEntry]:
        self.zone_of = _zones_by_uri([r.send for r in requests], self.zones)
        for request in requests:
            self.push(request.arrives_ms, "ready", (request.worker, "request", request))
        while self.events:
            now, _, kind, payload = heapq.heappop(self.events)
            getattr(self, f"_{kind}")(now, payload)
        return self.log

    def _ready(self, now: float, payload: object) -> None:
        index, what, request = payload  # type: ignore[misc]
        worker = self.workers[index]
        worker.ready.append((now, next(self.seq), what, request))
        if not worker.busy:
            worker.busy = True
            self.push(now + self.rng.uniform(0.005, self.machine.wake_ms), "wake", index)

    def _wake(self, now: float, index: object) -> None:
        worker = self.workers[index]  # type: ignore[index]
        # ngx_time_update: both clocks once per pass, each truncated to whole ms.
        worker.wall = math.floor(now + self.wall_phase)
        worker.mono = math.floor(now + self.wall_phase + self.mono_phase)
        batch, worker.ready = sorted(worker.ready), []
        at = now
        for _, _, what, request in batch:
            at += self.rng.uniform(0.02, 0.08)
            if self.machine.stall_p and self.rng.random() < self.machine.stall_p:
                at += self.rng.expovariate(1 / self.machine.stall_mean_ms)
            self.push(at, "handle", (index, what, request, worker.wall, worker.mono))
        self.push(at, "done", index)

    def _done(self, now: float, index: object) -> None:
        worker = self.workers[index]  # type: ignore[index]
        worker.busy = False
        if worker.ready:
            worker.busy = True
            self.push(now + 0.005, "wake", index)

    def _handle(self, now: float, payload: object) -> None:
        index, what, request, wall, mono = payload  # type: ignore[misc]
        if what == "request":
            request.created_wall = wall
            zone = self.zone_of[request.send.uri]
            node = (zone, request.send.key)
            decision, after = step(self.zones[zone], self.nodes.get(node), mono)
            self.nodes[node] = after
            request.outcome, request.delay_ms = decision.outcome.value, decision.delay_ms
            if request.outcome == "REJECTED":
                if request.send.body and self.rng.random() < 0.5:
                    # The body is read to be discarded first: logged in a later pass.
                    self.push(now + self.rng.uniform(0.1, 1.5), "ready", (index, "log", request))
                else:
                    self._write(request, wall)
                return
            served = self.rng.uniform(1.0, 6.0) + request.delay_ms
            self.push(now + served, "ready", (index, "log", request))
        else:
            self._write(request, wall)

    def _write(self, request: _Request, wall: int) -> None:
        rejected = request.outcome == "REJECTED"
        elapsed = max(0, wall - request.created_wall)
        self.log.append(AccessLogEntry(
            msec=(EPOCH_MS + wall) / 1000, request_time_s=elapsed / 1000,
            method=request.send.method, uri=request.send.uri,
            status=429 if rejected else 200,
            upstream_addrs=() if rejected else ("10.0.0.2:8000",),
            upstream_backends=() if rejected else ("backend-1",),
            upstream_statuses=() if rejected else ("200",), upstream_times_s=(),
            limit_req_status=request.outcome, remote_addr=request.send.key,
            worker=PIDS[request.worker]))


def simulate(zones: Mapping[str, Limiter], sends: Sequence[Send], seed: int, *,
             machine: Machine = LOADED, workers: int = 2) -> list[AccessLogEntry]:
    """The access log of an NGINX running a limiter per location prefix (``zones``) for
    ``sends``, in logging order."""
    rng = random.Random(seed)
    requests = []
    for send in sends:
        late = rng.uniform(0, machine.send_slack_ms)
        if machine.late_p and rng.random() < machine.late_p:
            late += rng.expovariate(1 / machine.late_mean_ms)
        network = 0.05 + rng.uniform(0, 0.1)
        requests.append(_Request(send, rng.randrange(workers), send.at_ms + late + network))
    return _Nginx(zones, rng, machine, workers).run(requests)
