"""Every client request's outcome, explained from NGINX's log and the configuration it runs.

A request that did not get an ok answer is explained when the configuration implies it:
NGINX did not retry a failed try because ``proxy_next_upstream`` (its conditions, tries,
timeout, the non-idempotent rule) forbids it, or it found no live server, or the backend
itself answered the error while a fault was in place, or ``limit_req`` rejected it, or the
client gave up while NGINX was still inside a timeout it is configured to wait. Anything else
(an error with no fault in place, a retry the configuration makes but NGINX did not, a
request NGINX never logged) is unexplained: the system did not behave as configured.

The latency bound of an answered request is built the same way, from its own tries: each
failed try costs the timeout configured for it (NGINX's timers never fire early; the replay
holds them to the configured value), a try on a backend under a fault at most what that fault
allows, and a healthy try what NGINX took over the answers that never met the fault (their
longest, by NGINX's own $request_time). No constant is added.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from lab.checks.upstream_replay import (
    CONDITION,
    AttemptEnd,
    Replay,
    Request,
    ViolationKind,
    retry_allowed,
)
from lab.expectations import UpstreamPolicy
from lab.history import AccessLogEntry, Effect, History, RequestRecord, ready_mark


class Why(StrEnum):
    """Why a request did not get an ok answer."""

    NOT_RETRIED = "not retried"
    NO_LIVE = "no live upstreams"
    BACKEND_ANSWERED = "the backend answered it"
    RATE_LIMITED = "rate limited"
    CLIENT_GAVE_UP = "the client gave up first"
    NGINX_DOWN = "NGINX itself was under a fault"
    # Unexplained:
    AGAINST_CONFIG = "against the configuration"
    NOT_LOGGED = "never reached NGINX's log"
    NO_FAULT = "an error with no fault in place"


EXPLAINED = frozenset({Why.NOT_RETRIED, Why.NO_LIVE, Why.BACKEND_ANSWERED, Why.RATE_LIMITED,
                       Why.CLIENT_GAVE_UP, Why.NGINX_DOWN})


@dataclass(frozen=True)
class Outcome:
    """One request that did not get an ok answer, and why."""

    request: RequestRecord
    why: Why
    detail: str

    @property
    def explained(self) -> bool:
        return self.why in EXPLAINED


def fault_windows(history: History, effect: Callable[[Effect], bool] | None = None
                  ) -> list[tuple[str, float, float]]:
    """(target, from, until) of every fault (those whose effect passes ``effect``): from its
    action's start until its heal, or, for a fault that stopped the node, until the node was
    ready again."""
    end = max([r.sent_at for r in history.requests] + [e.msec for e in history.access_log],
              default=0.0) + 1.0
    out = []
    for inject, heal in history.fault_windows():
        if effect is not None and not effect(inject.effect):
            continue
        if heal is None:
            out.append((inject.target, inject.started_at, end))
            continue
        ready = [m.at for m in history.marks
                 if m.name == ready_mark(heal.target) and m.at >= heal.at]
        out.append((inject.target, inject.started_at, min(ready) if ready else heal.at))
    return out


def _during(windows: Sequence[tuple[str, float, float]], t0: float, t1: float,
            target: str | None = None) -> bool:
    return any(start <= t1 and t0 < until and (target is None or node == target)
               for node, start, until in windows)


class Explainer:
    """Explains client outcomes from one run's log, replay and configuration."""

    def __init__(self, history: History, replay: Replay, policy_for, *,
                 rate_limit_status: int = 503) -> None:
        self.history = history
        self.replay = replay
        self.policy_for = policy_for
        self.rate_limit_status = rate_limit_status
        self.windows = fault_windows(history)
        self.log = {e.request_id: e for e in history.access_log if e.request_id}
        self.by_entry = {r.entry: r for r in replay.requests}
        self.index = {id(e): i for i, e in enumerate(history.access_log)}
        self.against = {}
        for v in replay.violations:
            if v.kind in (ViolationKind.RETRY_MISSING, ViolationKind.RETRY_NOT_ALLOWED,
                          ViolationKind.NO_LIVE_WHILE_ELIGIBLE, ViolationKind.TIMEOUT_DURATION):
                self.against.setdefault(round(v.at, 3), []).append(v)

    def entry(self, request: RequestRecord) -> AccessLogEntry | None:
        """NGINX's log line of a client request (joined on X-Request-Id)."""
        return self.log.get(request.request_id or "")

    def pool_request(self, entry: AccessLogEntry) -> Request | None:
        """The replay's view of a logged request, if it reached the pool."""
        return self.by_entry.get(self.index.get(id(entry), -1))

    def explain(self, request: RequestRecord) -> Outcome | None:
        """Why ``request`` got no ok answer (None when it did)."""
        if request.outcome.value == "ok":
            return None
        end = request.finished_at or request.sent_at + 60
        entry = self.entry(request)
        if entry is None:
            if _during(self.windows, request.sent_at, end, "nginx"):
                return Outcome(request, Why.NGINX_DOWN, "NGINX was under a fault")
            return Outcome(request, Why.NOT_LOGGED, f"NGINX never logged it "
                           f"({request.error or request.status or 'no answer'})")
        if entry.limit_req_status == "REJECTED" or (entry.status == self.rate_limit_status
                                                    and not entry.upstream_addrs):
            return Outcome(request, Why.RATE_LIMITED, "limit_req rejected it")
        pool = self.pool_request(entry)
        located = self.policy_for(entry.uri)
        if entry.status == 499:
            return self._gave_up(request, entry, pool, located)
        if request.status is not None and request.status != entry.status:
            return Outcome(request, Why.AGAINST_CONFIG, f"NGINX logged {entry.status}, the "
                           f"client got {request.status}")
        if pool is None or not pool.attempts:
            if pool is not None and pool.no_live:
                return self._no_live(request, pool)
            if _during(self.windows, request.sent_at, end):
                return Outcome(request, Why.BACKEND_ANSWERED, f"{entry.status} from NGINX "
                               "during a fault")
            return Outcome(request, Why.NO_FAULT, f"{entry.status} with no fault in place")
        violations = [v for a in pool.attempts
                      for v in self.against.get(round(a.ended_at, 3), ())
                      if v.backend == a.backend]
        if violations:
            return Outcome(request, Why.AGAINST_CONFIG, violations[0].detail)
        if pool.no_live:
            return self._no_live(request, pool)
        last = pool.attempts[-1]
        if last.end in CONDITION:
            first = pool.attempts[0].started_at
            peers = len(located.servers) + len(located.backup_servers)
            tries = min(located.next_upstream_tries or peers, peers)
            allowed, why = retry_allowed(located, last, last.ended_at - first, tries)
            if allowed:
                return Outcome(request, Why.AGAINST_CONFIG, f"{last.end.value} on "
                               f"{last.backend} not retried, though the configuration retries it")
            return Outcome(request, Why.NOT_RETRIED, f"{last.end.value} on {last.backend}, not "
                           f"retried: {why}")
        if last.end is AttemptEnd.RESPONSE:
            if _during(self.windows, request.sent_at, end):
                return Outcome(request, Why.BACKEND_ANSWERED, f"{last.backend} answered "
                               f"{last.status} while a fault was in place")
            return Outcome(request, Why.NO_FAULT, f"{last.backend} answered {last.status} with "
                           "no fault in place")
        return Outcome(request, Why.AGAINST_CONFIG, f"{entry.status} after {last.end.value}")

    def _no_live(self, request: RequestRecord, pool: Request) -> Outcome:
        return Outcome(request, Why.NO_LIVE, "NGINX found no live server: every untried one "
                       "skipped by its counters or at its max_conns")

    def _gave_up(self, request: RequestRecord, entry: AccessLogEntry, pool: Request | None,
                 located: UpstreamPolicy) -> Outcome:
        """The client gave up: fine while NGINX was inside a wait its configuration sets."""
        if pool is None or not pool.attempts:
            return Outcome(request, Why.CLIENT_GAVE_UP, "NGINX had not reached a backend yet "
                           f"({entry.request_time_s:.3f} s)")
        last = pool.attempts[-1]
        if last.connect_s is None:
            limit, name, waited = located.connect_timeout_s, "proxy_connect_timeout", \
                last.duration_s
        else:
            limit, name = located.read_timeout_s, "proxy_read_timeout"
            waited = last.duration_s - last.connect_s
        if waited < limit:
            return Outcome(request, Why.CLIENT_GAVE_UP, f"after {entry.request_time_s:.3f} s, "
                           f"while NGINX waited on {last.backend} inside {name} {limit:g} s")
        return Outcome(request, Why.AGAINST_CONFIG, f"the client gave up after "
                       f"{entry.request_time_s:.3f} s: NGINX had waited {waited:.3f} s on "
                       f"{last.backend}, past {name} {limit:g} s")
