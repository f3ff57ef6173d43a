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
    zone: str = ""
    created_wall: int = 0
    outcome: str = ""
    delay_ms: int = 0


@dataclass
class _Worker:
    pid: int
    ready: list[tuple[float, int, bool, _Request]] = field(default_factory=list)
    busy: bool = False


def _zone_of(uri: str, zones: Mapping[str, Limiter]) -> str:
    """The longest location prefix of ``zones`` that ``uri`` starts with."""
    return max((loc for loc in zones if uri.startswith(loc)), key=len)


# Event kinds: an event ready for a worker, a worker waking, a worker handling one event, a
# worker at the end of its pass.
_READY, _WAKE, _HANDLE, _DONE = range(4)


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
        # (at, sequence, kind, worker, is a request (else a log), request, wall ms, mono ms)
        self.events: list[tuple[float, int, int, int, bool, _Request | None, int, int]] = []
        self.seq = itertools.count()
        self.log: list[AccessLogEntry] = []

    def push(self, at: float, kind: int, index: int, is_request: bool = False,
             request: _Request | None = None, wall: int = 0, mono: int = 0) -> None:
        heapq.heappush(self.events, (at, next(self.seq), kind, index, is_request, request,
                                     wall, mono))

    def run(self, requests: Sequence[_Request]) -> list[AccessLogEntry]:
        for request in requests:
            self.push(request.arrives_ms, _READY, request.worker, True, request)
        while self.events:
            now, _, kind, index, is_request, request, wall, mono = heapq.heappop(self.events)
            if kind == _READY:
                self._ready(now, index, is_request, request)  # type: ignore[arg-type]
            elif kind == _WAKE:
                self._wake(now, index)
            elif kind == _HANDLE:
                self._handle(now, index, is_request, request, wall, mono)  # type: ignore[arg-type]
            else:
                self._done(now, index)
        return self.log

    def _ready(self, now: float, index: int, is_request: bool, request: _Request) -> None:
        worker = self.workers[index]
        worker.ready.append((now, next(self.seq), is_request, request))
        if not worker.busy:
            worker.busy = True
            self.push(now + self.rng.uniform(0.005, self.machine.wake_ms), _WAKE, index)

    def _wake(self, now: float, index: int) -> None:
        worker = self.workers[index]
        # ngx_time_update: both clocks once per pass, each truncated to whole ms.
        wall = math.floor(now + self.wall_phase)
        mono = math.floor(now + self.wall_phase + self.mono_phase)
        batch, worker.ready = sorted(worker.ready), []
        at = now
        stall_p, uniform = self.machine.stall_p, self.rng.uniform
        for _, _, is_request, request in batch:
            at += uniform(0.02, 0.08)
            if stall_p and self.rng.random() < stall_p:
                at += self.rng.expovariate(1 / self.machine.stall_mean_ms)
            self.push(at, _HANDLE, index, is_request, request, wall, mono)
        self.push(at, _DONE, index)

    def _done(self, now: float, index: int) -> None:
        worker = self.workers[index]
        worker.busy = False
        if worker.ready:
            worker.busy = True
            self.push(now + 0.005, _WAKE, index)

    def _handle(self, now: float, index: int, is_request: bool, request: _Request, wall: int,
                mono: int) -> None:
        if not is_request:
            self._write(request, wall)
            return
        request.created_wall = wall
        node = (request.zone, request.send.key)
        decision, after = step(self.zones[request.zone], self.nodes.get(node), mono)
        self.nodes[node] = after
        request.outcome, request.delay_ms = decision.outcome.value, decision.delay_ms
        if request.outcome == "REJECTED":
            if request.send.body and self.rng.random() < 0.5:
                # The body is read to be discarded first: logged in a later pass.
                self.push(now + self.rng.uniform(0.1, 1.5), _READY, index, False, request)
            else:
                self._write(request, wall)
            return
        served = self.rng.uniform(1.0, 6.0) + request.delay_ms
        self.push(now + served, _READY, index, False, request)

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
    zone_of = {uri: _zone_of(uri, zones) for uri in {s.uri for s in sends}}
    requests = []
    for send in sends:
        late = rng.uniform(0, machine.send_slack_ms)
        if machine.late_p and rng.random() < machine.late_p:
            late += rng.expovariate(1 / machine.late_mean_ms)
        network = 0.05 + rng.uniform(0, 0.1)
        requests.append(_Request(send, rng.randrange(workers), send.at_ms + late + network,
                                 zone_of[send.uri]))
    return _Nginx(zones, rng, machine, workers).run(requests)
