"""NGINX's logged ``limit_req`` decisions replayed through the model on the clocks NGINX used.

What the access log shows against what ``limit_req`` read (nginx 1.22.1 source):

- ``limit_req`` decides on ``now = ngx_current_msec`` (``ngx_http_limit_req_module.c:416``).
  ``ngx_time_update`` sets it once per event-loop pass, right after ``epoll_wait`` returns
  (``ngx_epoll_module.c:800-806``), from ``CLOCK_MONOTONIC`` truncated to whole milliseconds
  (``ngx_times.c:99``, ``ngx_monotonic_time`` at ``ngx_times.c:196-213``).
- ``$msec`` and ``$request_time`` read the *wall* clock cached in the same update
  (``gettimeofday``, ``tv_usec / 1000``: ``ngx_times.c:94-104``): ``$msec`` at logging
  (``ngx_http_log_module.c:829-834``), ``$request_time`` as that minus ``r->start_msec``
  (``ngx_http_log_module.c:838-851``), which ``ngx_http_alloc_request`` took from the same
  cache when the request's first bytes were read (``ngx_http_request.c:618-620``). So
  ``$msec - $request_time`` is exactly the wall millisecond of the pass that created the request.
- That pass also decides it: the request is created right after the first ``recv`` and parsed
  in the same call (``ngx_http_request.c:496-500``; keep-alive ``:3381-3393``), so a request
  head that arrives whole goes through the phases, PREACCESS included, before the worker
  returns to ``epoll_wait``. The lab's clients (aiohttp, httpx, urllib, k6) write a request
  head in one write.

The remaining ambiguity, and the alternatives the replay considers for it:

1. **Clock phase (every request, one way, 1 ms).** The two clocks are truncated separately:
   monotonic = wall + c with c constant (Linux moves CLOCK_REALTIME against CLOCK_MONOTONIC
   only on a clock step), so ``floor(W + c) = floor(W) + floor(c) + b`` with ``b`` 0 or 1
   depending on the wall time's sub-millisecond fraction, which the log does not show. The
   constant ``floor(c)`` cancels in the bucket's differences; each request is decided at its
   logged millisecond **plus 0 or 1**.
2. **A stale worker clock (only across workers).** Every worker caches its own time and the
   zone is shared (``ngx_shmtx_lock``, ``ngx_http_limit_req_module.c:246``): the zone sees
   requests in real order, each stamped with its worker's last update. Within a worker the
   stamps follow that order; across workers a worker that stalled mid-pass can decide a
   request stamped earlier after another worker's later one (the bucket then counts it as
   0 ms after the last, ``:445-451``). The bound comes from the same log: a worker processes
   what it stamped ``s`` before its next pass begins, and every log line of that worker
   (arrival or logging time) is the start of one of its passes, so the request was decided
   before the worker's first logged stamp after ``s`` (plus the millisecond it spans).
3. **A rejection logged later than it arrived** (``$request_time`` > 0, seen for POSTs whose
   body NGINX must read to discard it after the 429): it was decided in some pass of its
   worker between its arrival and its logging, so it may come later in the zone's order, up
   to its ``$msec``. An acceptance logs no such bound; it is decided at its arrival.

Each request's phase is chosen on its own, though requests of one pass share it in truth,
and within a pass acceptances are taken before rejections (no bucket leaks inside a
millisecond, so a rejection there would also be one after them): both can only make the
replay more lenient than NGINX, never stricter.

The replay follows every combination at once, as a set of bucket states: a decision
NGINX logged is explained when some alternative gives it, and only the states where it does
go on (NGINX's decision is an observation of its own bucket). A decision no alternative
explains is unexplained; the replay then carries on from NGINX's decision, with the excess the
model computes for it (not clamped at the burst), so every further extra acceptance shows too.

``logged_request`` and ``worker_clocks`` read those fields off the access log's lines.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lab.checks.limit_req_model import (
    ONE_REQUEST,
    Decision,
    Limiter,
    LimitOutcome,
    advance,
)
from lab.history import AccessLogEntry

# Each request's decision time is its logged millisecond plus one of these (alternative 1).
CLOCK_PHASES_MS = (0, 1)
# More bucket states than this at once: the log leaves too many orders open to follow.
MAX_STATES = 20_000
_NO_NODE = -1                   # excess of a key that has no node in the zone yet
_NEVER = 1 << 62                # a worker with no later stamp: no bound from the log
_REJECTED_OUTCOME = LimitOutcome.REJECTED


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One request as NGINX logged it, reduced to what the replay needs."""

    stamp_ms: int               # $msec - $request_time: the wall ms of the pass that created it
    logged_ms: int              # $msec: the wall ms of the pass that logged it
    worker: int                 # $pid
    outcome: LimitOutcome       # $limit_req_status
    index: int = 0              # the caller's position for it, to report

    @property
    def deferred(self) -> bool:
        """A rejection logged in a later pass than the one that created it (alternative 3)."""
        return self.logged_ms > self.stamp_ms and self.outcome is _REJECTED_OUTCOME


class WorkerClocks:
    """Every pass start each worker's log lines show, for alternative 2's bound."""

    def __init__(self, stamps: Mapping[int, Sequence[int]]):
        self._stamps = {worker: sorted(set(values)) for worker, values in stamps.items()}

    @classmethod
    def of(cls, lines: Sequence[tuple[int, int, int]]) -> WorkerClocks:
        """From (worker, arrival ms, logged ms) of every line of the access log."""
        stamps: dict[int, list[int]] = defaultdict(list)
        for worker, arrival, logged in lines:
            stamps[worker] += (arrival, logged)
        return cls(stamps)

    def horizon(self, worker: int, stamp_ms: int) -> int:
        """The first stamp of ``worker`` after ``stamp_ms``: it decided anything it stamped
        ``stamp_ms`` before that pass began."""
        stamps = self._stamps.get(worker, [])
        at = bisect.bisect_right(stamps, stamp_ms)
        return stamps[at] if at < len(stamps) else _NEVER


@dataclass(frozen=True, slots=True)
class Unexplained:
    """A decision of NGINX's that no clock alternative gives."""

    request: LoggedRequest
    model: Decision             # the model's decision at the logged time, in the state it met


@dataclass(frozen=True)
class Replay:
    """The outcome of one replay: what stayed unexplained, and how hard it was to follow."""

    unexplained: tuple[Unexplained, ...]
    requests: int
    peak_states: int
    reordered: bool             # workers' requests had to be taken out of logged order
    gave_up: bool = False       # more than MAX_STATES states: undecided

    @property
    def explained(self) -> bool:
        return not self.unexplained and not self.gave_up


_PASSED, _DELAYED, _REJECTED = 0, 1, 2
_CODES = {LimitOutcome.PASSED: _PASSED, LimitOutcome.DELAYED: _DELAYED,
          LimitOutcome.REJECTED: _REJECTED}


@dataclass(frozen=True, slots=True)
class _Item:
    stamp: int
    horizon: int                # processed before this wall ms began + 1 (alternative 2 and 3)
    outcome: LimitOutcome
    accepted: bool
    request: LoggedRequest
    code: int = 0               # _CODES[outcome], for the hot path


def _queues(requests: Sequence[LoggedRequest], clocks: WorkerClocks) -> list[list[_Item]]:
    """One queue per worker in the order it stamped its requests, and one per deferred
    rejection; within a pass, acceptances first (no bucket leaks inside a millisecond, so a
    rejection there would also be one after them)."""
    by_worker: dict[int, list[_Item]] = defaultdict(list)
    own: list[list[_Item]] = []
    for request in requests:
        if request.deferred:
            item = _Item(request.stamp_ms, request.logged_ms, request.outcome, False, request,
                         _REJECTED)
            own.append([item])
            continue
        item = _Item(request.stamp_ms, clocks.horizon(request.worker, request.stamp_ms),
                     request.outcome, request.outcome.accepted, request, _CODES[request.outcome])
        by_worker[request.worker].append(item)
    queues = [sorted(items, key=lambda i: (i.stamp, not i.accepted, i.request.logged_ms,
                                           i.request.index))
              for _, items in sorted(by_worker.items())]
    return queues + own


def _decide(limiter: Limiter, excess: int, last: int, t_ms: int) -> tuple[Decision, int, int]:
    """``limit_req_model.step`` on plain integers: the decision and the node afterwards."""
    if excess == _NO_NODE:
        return Decision(LimitOutcome.PASSED, 0, None), 0, t_ms
    raw, new_excess, new_last = advance(limiter.rate, excess, last, t_ms)
    if new_excess > limiter.burst:
        return Decision(LimitOutcome.REJECTED, new_excess, raw), excess, last
    if new_excess <= limiter.delay:
        return Decision(LimitOutcome.PASSED, new_excess, raw), new_excess, new_last
    wait = (new_excess - limiter.delay) * 1000 // limiter.rate
    outcome = LimitOutcome.DELAYED if wait else LimitOutcome.PASSED
    return Decision(outcome, new_excess, raw, wait), new_excess, new_last


_State = tuple[tuple[int, ...], int, int]       # (position in each queue, excess, last ms)


class _Search:
    """The set of bucket states NGINX's log so far leaves possible."""

    def __init__(self, limiter: Limiter, queues: list[list[_Item]], *, reorder: bool,
                 acceptance_only: bool):
        self.limiter = limiter
        self.queues = queues
        self.reorder = reorder
        self.acceptance_only = acceptance_only
        self.stamps = [[item.stamp for item in queue] for queue in queues]
        self.horizons = [[item.horizon for item in queue] for queue in queues]
        self.lengths = [len(queue) for queue in queues]

    def candidates(self, positions: tuple[int, ...]) -> list[int]:
        """The queues whose next request may be the zone's next, in logged order first."""
        heads = [(self.stamps[q][p], q) for q, p in enumerate(positions)
                 if p < self.lengths[q]]
        if len(heads) < 2:
            return [q for _, q in heads]
        heads.sort()
        if not self.reorder:
            return [q for stamp, q in heads if stamp == heads[0][0]]
        allowed = []
        for stamp, q in heads:
            # Taking this one first leaves every earlier-stamped head behind: each must have
            # been decided after it, which its worker's next pass start bounds.
            if all(stamp <= self.horizons[o][positions[o]]
                   for other_stamp, o in heads if other_stamp < stamp):
                allowed.append(q)
        return allowed

    def explain(self, state: _State, q: int) -> list[_State]:
        """The states after queue ``q``'s next request under each clock phase that gives
        NGINX's decision."""
        # The hot path of every replay: _decide's arithmetic on outcome codes, no objects.
        positions, excess, last = state
        item = self.queues[q][positions[q]]
        moved = positions[:q] + (positions[q] + 1,) + positions[q + 1:]
        limiter = self.limiter
        out = []
        for phase in CLOCK_PHASES_MS:
            t_ms = item.stamp + phase
            if excess == _NO_NODE:
                code, new_excess, new_last = _PASSED, 0, t_ms
            else:
                _, new_excess, new_last = advance(limiter.rate, excess, last, t_ms)
                if new_excess > limiter.burst:
                    code, new_excess, new_last = _REJECTED, excess, last
                elif new_excess <= limiter.delay or not (
                        (new_excess - limiter.delay) * 1000 // limiter.rate):
                    code = _PASSED
                else:
                    code = _DELAYED
            if code == item.code or (self.acceptance_only
                                     and (code == _REJECTED) == (item.code == _REJECTED)):
                out.append((moved, new_excess, new_last))
        return out

    def follow_nginx(self, state: _State, q: int) -> tuple[Decision, list[_State]]:
        """The model's decision for queue ``q``'s next request at its logged time, and the
        states after NGINX's own decision (its excess not clamped at the burst)."""
        positions, excess, last = state
        item = self.queues[q][positions[q]]
        moved = positions[:q] + (positions[q] + 1,) + positions[q + 1:]
        decision = _decide(self.limiter, excess, last, item.stamp)[0]
        out = []
        for phase in CLOCK_PHASES_MS:
            if not item.outcome.accepted:
                out.append((moved, excess, last))
            elif excess == _NO_NODE:
                out.append((moved, 0, item.stamp + phase))
            else:
                _, new_excess, new_last = advance(self.limiter.rate, excess, last,
                                                  item.stamp + phase)
                out.append((moved, new_excess, new_last))
        return decision, out


def replay(limiter: Limiter, requests: Sequence[LoggedRequest], clocks: WorkerClocks, *,
           acceptance_only: bool = False) -> Replay:
    """Whether one key's logged decisions follow from ``limiter`` under NGINX's clocks.

    Tries the logged order first (alternative 1 only) and takes workers' requests out of
    order (alternatives 2 and 3) only when that leaves a decision unexplained.
    """
    first = _run(limiter, requests, clocks, reorder=False, acceptance_only=acceptance_only,
                 stop_at_first=True)
    if first is not None:
        return first
    second = _run(limiter, requests, clocks, reorder=True, acceptance_only=acceptance_only)
    assert second is not None
    return second


def _run(limiter: Limiter, requests: Sequence[LoggedRequest], clocks: WorkerClocks, *,
         reorder: bool, acceptance_only: bool, stop_at_first: bool = False) -> Replay | None:
    """One replay; None when ``stop_at_first`` and a decision is left unexplained."""
    queues = _queues(requests, clocks)
    search = _Search(limiter, queues, reorder=reorder, acceptance_only=acceptance_only)
    frontier: set[_State] = {(tuple(0 for _ in queues), _NO_NODE, 0)}
    unexplained: list[Unexplained] = []
    peak = 1
    for _ in range(len(requests)):
        following: set[_State] = set()
        for state in frontier:
            for q in search.candidates(state[0]):
                following.update(search.explain(state, q))
        if not following and stop_at_first:
            return None
        if not following:
            # Nothing explains the next decision: report it as the logged order meets it,
            # then go on from what NGINX decided, in every state.
            reported = False
            for state in sorted(frontier):
                q = search.candidates(state[0])[0]
                decision, after = search.follow_nginx(state, q)
                if not reported:
                    unexplained.append(Unexplained(queues[q][state[0][q]].request, decision))
                    reported = True
                following.update(after)
        peak = max(peak, len(following))
        if len(following) > MAX_STATES:
            return Replay(tuple(unexplained), len(requests), peak, reorder, gave_up=True)
        frontier = following
    return Replay(tuple(unexplained), len(requests), peak, reorder)


def threshold_of(limiter: Limiter, decision: Decision, observed: LimitOutcome) -> tuple[str, int]:
    """Which threshold a disagreement is about, and its level in milli-requests."""
    if decision.outcome.accepted != observed.accepted:
        return "burst", limiter.burst
    return "delay", limiter.delay


__all__ = ["CLOCK_PHASES_MS", "MAX_STATES", "ONE_REQUEST", "LoggedRequest", "Replay",
           "Unexplained", "WorkerClocks", "replay", "threshold_of"]


# -- from access log lines ----------------------------------------------------------------------


def _observed(entry: AccessLogEntry) -> LimitOutcome:
    # limit_req's own word: a rejection answered with another status than limit_req_status is
    # still a rejection for the bucket (and fails the check separately); a 429 the backend
    # sent itself passed the limiter. A dry run's rejection left the bucket as a rejection.
    if entry.limit_req_status in ("REJECTED", "REJECTED_DRY_RUN"):
        return LimitOutcome.REJECTED
    if entry.limit_req_status in ("DELAYED", "DELAYED_DRY_RUN"):
        return LimitOutcome.DELAYED
    return LimitOutcome.PASSED


def _ms(seconds: float) -> int:
    # $msec and $request_time are whole milliseconds, logged as seconds with 3 decimals.
    return round(seconds * 1000)


def worker_clocks(entries: Sequence[AccessLogEntry]) -> WorkerClocks:
    """Each worker's pass starts as every line of the access log shows them."""
    return WorkerClocks.of([(e.worker, _ms(e.started_at), _ms(e.msec)) for e in entries])


def logged_request(entry: AccessLogEntry, index: int) -> LoggedRequest:
    """What the replay needs of one access log line."""
    return LoggedRequest(_ms(entry.started_at), _ms(entry.msec), entry.worker, _observed(entry),
                         index)
