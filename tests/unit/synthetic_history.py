"""Synthetic histories for the checks' unit tests: a small model of NGINX's passive checks.

``simulate`` plays open-model traffic through round robin over ``servers`` while ``target``
fails between inject and heal, applying the rules of docs/semantics.md §1 (a failure is
counted when its attempt ends, ``c`` after it started; a server with ``fails >= max_fails``
is skipped for ``fail_timeout``; then one request probes it). Its parameters are the
simulated NGINX's, deliberately separate from the policy a check is given, so a test can make
NGINX misbehave (eject late, never eject, not retry) against an honest policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.expectations import UpstreamPolicy
from lab.history import (
    AccessLogEntry,
    FaultEvent,
    FaultPhase,
    History,
    Outcome,
    RequestRecord,
)

T0 = 1_700_000_000.0
SERVERS = ("backend-1", "backend-2", "backend-3")
NORMAL_S = 0.002


def policy(**changes: object) -> UpstreamPolicy:
    """The lab's default upstream policy with some fields changed."""
    values: dict[str, object] = {
        "name": "backend", "servers": SERVERS, "max_fails": 3, "fail_timeout_s": 4.0,
        "connect_timeout_s": 1.0, "read_timeout_s": 5.0,
        "next_upstream": ("error", "timeout", "http_502", "http_503", "http_504"),
        "zone": True, "worker_processes": 2, "balancing": "round_robin",
    }
    values.update(changes)
    return UpstreamPolicy(**values)  # type: ignore[arg-type]


@dataclass
class _Peer:
    """One upstream server's round-robin state, as ngx_http_upstream_round_robin.c keeps it."""

    name: str
    current_weight: int = 0
    effective_weight: int = 1
    fails: int = 0
    checked: float = -1e9


@dataclass
class Simulation:
    """What the simulated NGINX does; see the module docstring."""

    rate_per_s: float = 20.0
    duration_s: float = 20.0
    target: str = "backend-2"
    inject_at: float = 2.0           # seconds after T0
    # The fault takes effect this long before its action returns (a slow `docker kill`).
    effect_lead_s: float = 0.0
    heal_at: float | None = 12.0
    ready_after_heal_s: float = 0.0  # the target keeps failing this long after the heal
    mark_ready: bool = True
    cost_s: float = 1.0              # what one failed attempt costs
    # What a failed attempt costs while the fault's action is still under way (before
    # inject_at), when the process is gone but not yet its address; None: cost_s.
    lead_cost_s: float | None = None
    max_fails: int = 3               # 0: never ejects
    fail_timeout_s: float = 4.0
    retry: bool = True
    method: str = "GET"
    servers: tuple[str, ...] = SERVERS
    fault: str = "kill"
    _peers: list[_Peer] = field(default_factory=list, init=False)
    _pending: list[float] = field(default_factory=list, init=False)

    def _down(self, t: float) -> bool:
        healed = self.heal_at is not None and t >= self.heal_at + self.ready_after_heal_s
        return t >= self.inject_at - self.effect_lead_s and not healed

    def _pick(self, t: float, tried: set[str]) -> _Peer | None:
        # Smooth weighted round robin (weight 1 each), skipping tried and ejected peers.
        best, total = None, 0
        for peer in self._peers:
            if peer.name in tried:
                continue
            if (self.max_fails and peer.fails >= self.max_fails
                    and t - peer.checked <= self.fail_timeout_s):
                continue
            peer.current_weight += peer.effective_weight
            total += peer.effective_weight
            if peer.effective_weight < 1:
                peer.effective_weight += 1
            if best is None or peer.current_weight > best.current_weight:
                best = peer
        if best is not None:
            best.current_weight -= total
            if t - best.checked > self.fail_timeout_s:
                best.checked = t
        return best

    def _count_failures(self, t: float) -> None:
        target = next(p for p in self._peers if p.name == self.target)
        for done in sorted(p for p in self._pending if p <= t):
            self._pending.remove(done)
            target.fails += 1
            target.checked = done
            if self.max_fails:
                target.effective_weight = max(0, target.effective_weight - 1 // self.max_fails)

    def run(self) -> History:
        """The history of one simulated run."""
        self._peers = [_Peer(name) for name in self.servers]
        history = History()
        history.faults.append(FaultEvent(self.fault, self.target, FaultPhase.INJECT,
                                         T0 + self.inject_at,
                                         T0 + self.inject_at - max(0.05, self.effect_lead_s)))
        if self.heal_at is not None:
            history.faults.append(FaultEvent(self.fault, self.target, FaultPhase.HEAL,
                                             T0 + self.heal_at, T0 + self.heal_at - 0.05))
            if self.mark_ready:
                history.mark(f"ready:{self.target}", T0 + self.heal_at + self.ready_after_heal_s)
        for i in range(int(self.rate_per_s * self.duration_s)):
            t = i / self.rate_per_s
            self._count_failures(t)
            tried: list[tuple[str, str, float]] = []
            names: set[str] = set()
            while (peer := self._pick(t, names)) is not None:
                names.add(peer.name)
                if peer.name == self.target and self._down(t):
                    leading = self.lead_cost_s is not None and t < self.inject_at
                    cost = self.lead_cost_s if leading else self.cost_s
                    tried.append((peer.name, "502" if leading else "504", cost))
                    self._pending.append(t + cost)
                    if self.retry:
                        continue
                else:
                    tried.append((peer.name, "200", NORMAL_S))
                    peer.fails = 0
                break
            latency = sum(d for _, _, d in tried)
            final_server, final_status, _ = tried[-1]
            status = 200 if final_status == "200" else 502
            history.access_log.append(AccessLogEntry(
                msec=T0 + t + latency, request_time_s=latency, method=self.method, uri="/health",
                status=status, upstream_addrs=tuple(f"{s}:8000" for s, _, _ in tried),
                upstream_backends=tuple(s for s, _, _ in tried),
                upstream_statuses=tuple(st for _, st, _ in tried),
                upstream_times_s=tuple(d for _, _, d in tried), limit_req_status="-",
                request_id=f"r-{i}"))
            history.requests.append(RequestRecord(
                id=i, client="probe-1", method=self.method, path="/health", intended_at=T0 + t,
                sent_at=T0 + t, latency_s=latency, status=status,
                backend=final_server if status == 200 else None,
                outcome=Outcome.OK if status == 200 else Outcome.FAIL, request_id=f"r-{i}"))
        return history


def request(i: int, at: float, *, latency: float = NORMAL_S, backend: str | None = "backend-1",
            outcome: Outcome = Outcome.OK, status: int | None = 200) -> RequestRecord:
    """One client record at T0 + at."""
    return RequestRecord(id=i, client="probe-1", method="GET", path="/health",
                         intended_at=T0 + at, sent_at=T0 + at,
                         latency_s=latency if outcome is not Outcome.UNKNOWN else None,
                         status=status if outcome is not Outcome.UNKNOWN else None,
                         backend=backend, outcome=outcome)
