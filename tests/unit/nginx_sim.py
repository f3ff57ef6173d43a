"""A simulated NGINX upstream, faithful enough to judge the checks' power without Docker.

It plays open-model client traffic through NGINX's own algorithms (nginx 1.22.1,
``ngx_http_upstream_round_robin.c`` and ``ngx_http_upstream.c``; docs/semantics.md §1):
smooth weighted round robin with effective weights, per-peer ``fails``/``accessed``/``checked``
on NGINX's whole-second clock, failure counters per worker unless the upstream has a zone,
``proxy_next_upstream`` conditions, tries and the non-idempotent rule, connect and read
timers on NGINX's cached millisecond clock (each event handled up to ``loop_lag_s`` late), a
client that gives up (499, freed without a failure), and the access log NGINX writes, with
``$upstream_connect_time`` and ``$upstream_header_time``.

Its ``Nginx`` parameters are the simulated server's, separate from the policy a check is given,
so a power test can run an NGINX that differs from the configuration by one step.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field, replace

from lab.expectations import Expectations, NginxPolicy, Part, UpstreamPolicy, UpstreamServer
from lab.faults import FAULTS
from lab.history import (
    AccessLogEntry,
    FaultEvent,
    FaultPhase,
    History,
    Outcome,
    RequestRecord,
    ready_mark,
)

T0 = 1_700_000_000.0
SERVERS = ("backend-1", "backend-2", "backend-3")
NON_IDEMPOTENT = {"POST", "LOCK", "PATCH"}


@dataclass(frozen=True)
class Nginx:
    """The simulated NGINX's configuration (what it really runs)."""

    servers: tuple[str, ...] = SERVERS
    weights: tuple[int, ...] = (1, 1, 1)
    max_fails: int = 3
    fail_timeout_s: int = 10
    connect_timeout_s: float = 1.0
    read_timeout_s: float = 5.0
    next_upstream: tuple[str, ...] = ("error", "timeout", "http_502", "http_503", "http_504")
    tries: int = 0
    next_upstream_timeout_s: float = 0.0
    zone: bool = True
    workers: int = 2
    balancing: str = "round_robin"      # or least_conn
    # NGINX's single-server case (one server, no backup) counts no failure; an NGINX that
    # counted them anyway would be one step off.
    counts_single: bool = False
    max_conns: int = 0                  # each server's (0: no limit)

    def policy(self) -> UpstreamPolicy:
        """The configuration as the checks read it (``UpstreamPolicy``)."""
        members = tuple(UpstreamServer(n, f"{n}:8000", w, self.max_fails,
                                       float(self.fail_timeout_s), max_conns=self.max_conns)
                        for n, w in zip(self.servers, self.weights, strict=True))
        return UpstreamPolicy(
            name="backend", servers=self.servers, max_fails=self.max_fails,
            fail_timeout_s=float(self.fail_timeout_s), connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s, next_upstream=self.next_upstream,
            zone=self.zone, worker_processes=self.workers, balancing=self.balancing,
            next_upstream_tries=self.tries, members=members,
            next_upstream_timeout_s=self.next_upstream_timeout_s)


@dataclass(frozen=True)
class Stream:
    """One client stream: evenly spaced requests (open model)."""

    rate_per_s: float
    method: str = "GET"
    path: str = "/health"
    client: str = "reads"
    jitter_s: float = 0.0015       # how late the client's send may be


@dataclass(frozen=True)
class Fault:
    """What happens to the target and when (seconds after the start)."""

    target: str = "backend-1"
    mode: str = "unreachable"      # refused | unreachable | frozen | slowed
    added_s: float = 0.0           # slowed: the delay each answer from the target gets
    inject_at: float = 2.0
    heal_at: float | None = 6.0
    # The same fault again (a crash loop): (inject, heal) seconds after the start.
    again: tuple[float, float] | None = None
    ready_after_s: float = 0.3     # the healed backend answers this long after its heal
    action_s: float = 0.12         # how long the fault's own action took (docker kill)
    kind: str = "kill"


@dataclass
class _Peer:
    name: str
    weight: int
    cw: int = 0
    ew: int = 0
    fails: int = 0
    accessed: int = 0
    checked: int = 0
    conns: int = 0


@dataclass
class _Request:
    id: int
    stream: Stream
    sent: float
    arrived_ms: int
    worker: int
    attempts: list[dict] = field(default_factory=list)
    tried: set[str] = field(default_factory=set)
    done: bool = False
    first_select: float = 0.0


@dataclass
class Simulation:
    """One simulated run: ``run(seed)`` returns its history."""

    nginx: Nginx = field(default_factory=Nginx)
    streams: tuple[Stream, ...] = (Stream(20.0), Stream(5.0, "POST", "/api/messages", "writes"))
    fault: Fault = field(default_factory=Fault)
    duration_s: float = 20.0
    client_timeout_s: float = 10.0
    loop_lag_s: float = 0.001      # each event is handled up to this late (one loop pass)
    healthy_s: tuple[float, float] = (0.001, 0.003)

    def run(self, seed: int) -> History:
        """The history of one simulated run."""
        rng = random.Random(seed)
        nx = self.nginx
        domains = [0] if nx.zone else list(range(nx.workers))
        peers = {d: [_Peer(n, w, 0, w) for n, w in zip(nx.servers, nx.weights, strict=True)]
                 for d in domains}
        queue: list[tuple[float, int, str, object]] = []
        seq = 0

        def push(at: float, kind: str, data: object) -> None:
            nonlocal seq
            seq += 1
            heapq.heappush(queue, (at, seq, kind, data))

        def lag() -> float:
            return rng.uniform(0.0, self.loop_lag_s)

        f = self.fault
        down_from = T0 + f.inject_at - rng.uniform(0.0, f.action_s)
        up_at = T0 + f.heal_at + f.ready_after_s if f.heal_at is not None else math.inf
        periods = [(down_from, up_at)]
        if f.again is not None:
            periods.append((T0 + f.again[0] - rng.uniform(0.0, f.action_s),
                            T0 + f.again[1] + f.ready_after_s))

        def failing(name: str, t: float) -> bool:
            return name == f.target and any(a <= t < b for a, b in periods)

        def thaw(t: float) -> float:
            return next((b for a, b in periods if a <= t < b), math.inf)

        rid = 0
        for stream in self.streams:
            n = int(stream.rate_per_s * self.duration_s)
            for i in range(n):
                sent = T0 + i / stream.rate_per_s + rng.uniform(0.0, stream.jitter_s)
                push(sent, "arrive", (rid, stream, sent))
                rid += 1

        history = History()
        effect = FAULTS.get(f.kind).effect
        history.faults.append(FaultEvent(f.kind, f.target, FaultPhase.INJECT,
                                         T0 + f.inject_at, T0 + f.inject_at - f.action_s,
                                         effect=effect))
        if f.heal_at is not None:
            history.faults.append(FaultEvent(f.kind, f.target, FaultPhase.HEAL, T0 + f.heal_at,
                                             T0 + f.heal_at - 0.05, effect=effect))
            history.mark(ready_mark(f.target), up_at)
        if f.again is not None:
            history.faults += [
                FaultEvent(f.kind, f.target, FaultPhase.INJECT, T0 + f.again[0],
                           T0 + f.again[0] - f.action_s, effect=effect),
                FaultEvent(f.kind, f.target, FaultPhase.HEAL, T0 + f.again[1],
                           T0 + f.again[1] - 0.05, effect=effect)]
            history.mark(ready_mark(f.target), periods[1][1])
        requests: dict[int, _Request] = {}

        def ms(t: float) -> int:
            return math.floor(t * 1000)

        def select(req: _Request, t: float) -> _Peer | None:
            d = 0 if nx.zone else req.worker
            now = math.floor(t)
            best, total = None, 0
            eligible = [p for p in peers[d] if p.name not in req.tried and not (
                nx.max_fails and p.fails >= nx.max_fails and now - p.checked <= nx.fail_timeout_s)
                and not (nx.max_conns and p.conns >= nx.max_conns)]
            if nx.balancing == "least_conn" and eligible:
                # ngx_http_upstream_get_least_conn_peer: the fewest conns per weight; ties go
                # round robin among them.
                least = min(p.conns / p.weight for p in eligible)
                eligible = [p for p in eligible if p.conns / p.weight == least]
            for p in eligible:
                p.cw += p.ew
                total += p.ew
                if p.ew < p.weight:
                    p.ew += 1
                if best is None or p.cw > best.cw:
                    best = p
            if best is None:
                return None
            best.cw -= total
            best.conns += 1
            if now - best.checked > nx.fail_timeout_s:
                best.checked = now
            return best

        def free(req: _Request, name: str, t: float, failed: bool) -> None:
            d = 0 if nx.zone else req.worker
            p = next(p for p in peers[d] if p.name == name)
            p.conns -= 1
            if len(nx.servers) == 1 and not nx.counts_single:
                return
            now = math.floor(t)
            if failed:
                p.fails += 1
                p.accessed = p.checked = now
                if nx.max_fails:
                    p.ew = max(0, p.ew - p.weight // nx.max_fails)
            elif p.accessed < p.checked:
                p.fails = 0

        def start_attempt(req: _Request, t: float) -> None:
            peer = select(req, t)
            if peer is None:
                req.attempts.append({"name": "backend", "start": t, "status": "502",
                                     "end": t, "connect": None, "header": None})
                finish(req, t, 502)
                return
            req.tried.add(peer.name)
            attempt = {"name": peer.name, "start": t}
            req.attempts.append(attempt)
            if failing(peer.name, t) and f.mode == "unreachable":
                end, kind = t + nx.connect_timeout_s + lag(), "connect-timeout"
            elif failing(peer.name, t) and f.mode == "refused":
                end, kind = t + rng.uniform(0.0002, 0.001), "error"
            elif failing(peer.name, t) and f.mode == "frozen":
                connected = rng.uniform(0.0001, 0.0005)
                attempt["connect"] = connected
                end, kind = t + connected + nx.read_timeout_s + lag(), "read-timeout"
                if thaw(t) < end:
                    # Thawed before the read timer fired: the answer comes then.
                    end, kind = thaw(t) + rng.uniform(*self.healthy_s), "ok"
            elif failing(peer.name, t) and f.mode == "slowed":
                end, kind = t + rng.uniform(*self.healthy_s) + f.added_s, "ok"
            else:
                end, kind = t + rng.uniform(*self.healthy_s), "ok"
            if next_upstream_deadline(req) is not None:
                end = min(end, max(t, next_upstream_deadline(req)))
            push(end, "end", (req.id, len(req.attempts) - 1, kind))

        def next_upstream_deadline(req: _Request) -> float | None:
            if not nx.next_upstream_timeout_s or len(req.attempts) < 1:
                return None
            return req.first_select + nx.next_upstream_timeout_s

        def finish(req: _Request, t: float, status: int) -> None:
            req.done = True
            msec = ms(t)
            attempts = req.attempts
            history.access_log.append(AccessLogEntry(
                msec=msec / 1000, request_time_s=(msec - req.arrived_ms) / 1000,
                method=req.stream.method, uri=req.stream.path, status=status,
                upstream_addrs=tuple(f"{a['name']}:8000" if a["name"] != "backend"
                                     else "backend" for a in attempts),
                upstream_backends=tuple(a["name"] for a in attempts),
                upstream_statuses=tuple(a["status"] for a in attempts),
                upstream_times_s=tuple((ms(a["end"]) - ms(a["start"])) / 1000
                                       for a in attempts),
                limit_req_status="-", remote_addr="172.18.0.1", request_id=f"r-{req.id}",
                worker=req.worker + 7,
                upstream_connect_s=tuple(None if a.get("connect") is None else
                                         round(a["connect"], 3) for a in attempts),
                upstream_header_s=tuple(None if a.get("header") is None else
                                        round(a["header"], 3) for a in attempts)))
            if status == 499:
                return
            latency = t - req.sent + rng.uniform(0.0002, 0.001)
            ok = status < 400
            served = next((a["name"] for a in reversed(attempts) if a["status"] in
                           ("200", "201")), None)
            history.requests.append(RequestRecord(
                id=req.id, client=req.stream.client, method=req.stream.method,
                path=req.stream.path, intended_at=req.sent, sent_at=req.sent,
                latency_s=latency, status=status, backend=served if ok else None,
                outcome=Outcome.OK if ok else Outcome.FAIL, request_id=f"r-{req.id}"))

        while queue:
            at, _, kind, data = heapq.heappop(queue)
            if kind == "arrive":
                rid_, stream, sent = data  # type: ignore[misc]
                arrival = sent + 0.0003
                req = _Request(rid_, stream, sent, ms(arrival), rng.randrange(nx.workers))
                requests[rid_] = req
                body = rng.uniform(0.0005, 0.004) if stream.method == "POST" else 0.0
                push(arrival + body + lag(), "select", rid_)
                push(sent + self.client_timeout_s, "abandon", rid_)
            elif kind == "select":
                req = requests[data]  # type: ignore[index]
                req.first_select = at
                start_attempt(req, at)
            elif kind == "end":
                req_id, index, how = data  # type: ignore[misc]
                req = requests[req_id]
                if req.done:
                    continue
                attempt = req.attempts[index]
                attempt["end"] = at
                if how == "ok":
                    status = "201" if req.stream.method == "POST" else "200"
                    attempt.update(status=status, connect=attempt.get("connect", 0.0001),
                                   header=at - attempt["start"])
                    free(req, attempt["name"], at, failed=False)
                    finish(req, at, int(status))
                    continue
                deadline = next_upstream_deadline(req)
                if deadline is not None and at >= deadline and how != "error":
                    how = "connect-timeout" if attempt.get("connect") is None \
                        else "read-timeout"
                attempt["status"] = "502" if how == "error" else "504"
                free(req, attempt["name"], at, failed=True)
                condition = "error" if how == "error" else "timeout"
                sent_already = how == "read-timeout"
                tries_limit = min(nx.tries or len(nx.servers), len(nx.servers))
                allowed = (condition in nx.next_upstream
                           and len(req.attempts) < tries_limit
                           and not (sent_already and req.stream.method in NON_IDEMPOTENT
                                    and "non_idempotent" not in nx.next_upstream)
                           and not (deadline is not None and at >= deadline))
                if allowed:
                    start_attempt(req, at)
                else:
                    finish(req, at, 502 if how == "error" else 504)
            elif kind == "abandon":
                req = requests[data]  # type: ignore[index]
                if req.done:
                    continue
                t = at + lag()
                attempt = req.attempts[-1]
                attempt.update(end=t, status="-")
                if attempt["name"] != "backend":
                    free(req, attempt["name"], t, failed=False)
                finish(req, t, 499)
                history.requests.append(RequestRecord(
                    id=req.id, client=req.stream.client, method=req.stream.method,
                    path=req.stream.path, intended_at=req.sent, sent_at=req.sent,
                    latency_s=None, status=None, backend=None, outcome=Outcome.UNKNOWN,
                    request_id=f"r-{req.id}", error="timeout"))
        history.requests.sort(key=lambda r: r.sent_at)
        return history


def one_step(nginx: Nginx, change: str) -> Nginx:
    """``nginx`` with one setting moved by one step (the power table's changes)."""
    steps = {
        "max_fails +1": lambda n: replace(n, max_fails=n.max_fails + 1),
        "max_fails -1": lambda n: replace(n, max_fails=n.max_fails - 1),
        "fail_timeout +2s": lambda n: replace(n, fail_timeout_s=n.fail_timeout_s + 2),
        "fail_timeout -2s": lambda n: replace(n, fail_timeout_s=n.fail_timeout_s - 2),
        "connect_timeout +25%": lambda n: replace(n, connect_timeout_s=n.connect_timeout_s
                                                  * 1.25),
        "read_timeout +25%": lambda n: replace(n, read_timeout_s=n.read_timeout_s * 1.25),
    }
    return steps[change](nginx)


def expectations(policy: UpstreamPolicy) -> Expectations:
    """An expectations record whose NGINX part is ``policy`` (the other parts unread)."""
    return Expectations({"nginx": Part(NginxPolicy(policy, (), 429, ()), "simulated")},
                        "lab.local", ())


def failover(target: str = "backend-2", seed: int = 0, *, duration_s: float = 20.0,
             rate_per_s: float = 20.0, heal_at: float | None = 8.0, **nginx: object) -> History:
    """A simulated failover: ``target`` killed at 2 s and healed at ``heal_at`` under reads at
    ``rate_per_s``, by an NGINX with fail_timeout 4 s (the other settings as ``Nginx``,
    ``nginx`` changing some)."""
    real = replace(Nginx(fail_timeout_s=4), **nginx)
    return Simulation(nginx=real, streams=(Stream(rate_per_s, jitter_s=0.025),),
                      fault=Fault(target=target, heal_at=heal_at),
                      duration_s=duration_s).run(seed)
