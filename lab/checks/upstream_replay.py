"""NGINX's upstream peer state, replayed from its own access log.

Open-source NGINX decides per attempt (``ngx_http_upstream_round_robin.c``, nginx 1.22.1;
docs/semantics.md §1):

- **select** (``get_peer``, when an attempt starts; ``now`` is ``ngx_time()``, whole seconds):
  a peer is skipped while ``fails >= max_fails`` and ``now - checked <= fail_timeout``, while
  ``conns >= max_conns``, when ``down``, or when this request already tried it; among the
  others the balancer chooses; a chosen peer whose ``checked`` is more than ``fail_timeout``
  old gets ``checked = now``.
- **free** (when the attempt ends): a failure (error, timeout, invalid header, or a listed
  ``http_xxx`` that is retried) does ``fails += 1``, ``accessed = checked = now`` and lowers
  the peer's effective weight by ``weight // max_fails``; anything else (an answer passed on,
  a client that gave up) resets ``fails`` to 0 when ``accessed < checked``.

The counters live per worker process unless the upstream has a ``zone``. The access log lists
every attempt of every request (``$upstream_addr``), how long each took, whether it connected
and whether a header came back, the request's start (``$msec - $request_time``) and its
worker (``$pid``): enough to replay the counters NGINX kept and judge every routing decision
it made against the configuration it runs, instead of against a window guessed from the
request rate.

Timing: every time here is NGINX's own cached millisecond clock. An attempt's start is
reconstructed as the request's start plus the durations of its earlier attempts, each
rounded to the millisecond, so it is uncertain by ``(k + 2)`` ms for attempt ``k``; workers'
clocks are read once per event-loop pass. A decision is judged only when it comes out the
same for every order and whole second those uncertainties allow; otherwise it is counted as
ambiguous, never as a violation.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from lab.expectations import UpstreamPolicy, UpstreamServer
from lab.history import AccessLogEntry

# NGINX never retries these once the request was sent, unless proxy_next_upstream lists
# non_idempotent (ngx_http_upstream_next).
NON_IDEMPOTENT = frozenset({"POST", "LOCK", "PATCH"})
# What one reconstructed time may be off by: the log's millisecond resolution on each side.
BASE_SLACK_S = 0.002
PER_ATTEMPT_SLACK_S = 0.001


class AttemptEnd(StrEnum):
    """How one attempt on an upstream server ended, as the log shows it."""

    RESPONSE = "response"      # a response header came back (any status)
    ERROR = "error"            # refused, reset, invalid header: NGINX's own 502
    CONNECT_TIMEOUT = "connect-timeout"   # no connection within proxy_connect_timeout
    READ_TIMEOUT = "read-timeout"         # connected, no answer within proxy_read_timeout
    ABANDONED = "abandoned"    # the client gave up first (499): freed without a failure


# The proxy_next_upstream condition each ending raises.
CONDITION = {AttemptEnd.ERROR: "error", AttemptEnd.CONNECT_TIMEOUT: "timeout",
             AttemptEnd.READ_TIMEOUT: "timeout"}


@dataclass(frozen=True)
class Attempt:
    """One attempt of one request on one upstream server."""

    entry: int                 # index of its log entry
    index: int                 # 0 for the first attempt of the request
    backend: str
    worker: int
    started_at: float          # the earliest the select can have been
    duration_s: float
    status: str                # $upstream_status ("-" when none)
    end: AttemptEnd
    method: str
    uri: str
    retried: bool              # another attempt of the same request followed
    slack_s: float             # the select happened in [started_at, started_at + slack_s]
    connect_s: float | None = None   # $upstream_connect_time (None: never connected)

    @property
    def ended_at(self) -> float:
        return self.started_at + self.duration_s

    @property
    def failed(self) -> bool:
        """Whether NGINX counts it as a failure against the server (free with PEER_FAILED)."""
        if self.end in CONDITION:
            return True
        # A listed status counts only when it was retried (the last try's answer is passed
        # on and freed as a success); 403 and 404 never count (NGX_PEER_NEXT).
        return (self.end is AttemptEnd.RESPONSE and self.retried
                and self.status not in ("403", "404"))


def _classify(status: str, connect: float | None, header: float | None, final: int,
              last: bool, has_timing: bool) -> AttemptEnd:
    if header is not None:
        return AttemptEnd.RESPONSE
    if status in ("-", "") or (last and final == 499 and status not in ("502", "504")):
        return AttemptEnd.ABANDONED
    if not has_timing:
        # A log without $upstream_header_time (older runs): NGINX's own codes stand for it.
        if status == "504":
            return AttemptEnd.CONNECT_TIMEOUT if connect is None else AttemptEnd.READ_TIMEOUT
        return AttemptEnd.ERROR if status == "502" else AttemptEnd.RESPONSE
    if status == "504":
        return AttemptEnd.CONNECT_TIMEOUT if connect is None else AttemptEnd.READ_TIMEOUT
    return AttemptEnd.ERROR


@dataclass(frozen=True)
class Request:
    """One logged request that reached the pool, with its attempts in order."""

    entry: int
    entry_log: AccessLogEntry
    attempts: tuple[Attempt, ...]
    no_live: bool              # NGINX found no server to try (it logged the group's name)


def requests_to_pool(log: Sequence[AccessLogEntry], policy: UpstreamPolicy) -> list[Request]:
    """Every logged request whose attempts went to the pool's servers, attempts reconstructed."""
    members = {m.node for m in policy.members} or set(policy.servers) | set(
        policy.backup_servers)
    out: list[Request] = []
    for i, e in enumerate(log):
        backends = e.upstream_backends
        if not backends:
            continue
        named = [b for b in backends if b in members]
        no_live = policy.name in backends
        if not named and not no_live:
            continue
        has_timing = len(e.upstream_header_s) == len(backends) and bool(backends)
        start = e.started_at
        # Time NGINX spent on the request outside its attempts (reading a body before the
        # first, logging after the last): the first select falls somewhere in it.
        spent = sum(t or 0.0 for t in e.upstream_times_s)
        overhead = max(0.0, e.request_time_s - spent)
        attempts: list[Attempt] = []
        real = [k for k, b in enumerate(backends) if b != policy.name]
        for position, k in enumerate(real):
            duration = e.upstream_times_s[k] if k < len(e.upstream_times_s) else None
            duration = duration or 0.0
            connect = e.upstream_connect_s[k] if k < len(e.upstream_connect_s) else None
            header = e.upstream_header_s[k] if has_timing else None
            last = position == len(real) - 1
            end = _classify(e.upstream_statuses[k], connect, header, e.status, last, has_timing)
            attempts.append(Attempt(i, position, backends[k], e.worker, start, duration,
                                    e.upstream_statuses[k], end, e.method.upper(), e.uri,
                                    not last or no_live,
                                    overhead + BASE_SLACK_S + PER_ATTEMPT_SLACK_S * position,
                                    connect))
            start += duration
        out.append(Request(i, e, tuple(attempts), no_live))
    return out


# -- the counters -------------------------------------------------------------------------------


@dataclass
class _Peer:
    fails: int = 0
    accessed: int = 0
    checked: int = 0


class Eligibility(StrEnum):
    """Whether the counters let NGINX choose a peer, for every timing the log allows."""

    ELIGIBLE = "eligible"
    SKIPPED = "skipped"
    AMBIGUOUS = "ambiguous"


@dataclass(frozen=True)
class CounterChange:
    """A counter update NGINX made on one peer (a failure counted, or a reset)."""

    at: float
    backend: str
    domain: int
    fails: int                 # the count after the change
    counted: bool              # True: a failure counted; False: reset to 0
    attempt: Attempt


@dataclass(frozen=True)
class _Event:
    at: float
    order: int                 # frees before selects at the same time (ngx_http_upstream_next)
    attempt: Attempt
    kind: str                  # "select" | "free"


def _second(t: float) -> int:
    return math.floor(t + 1e-9)


class Counters:
    """The failure counters of one domain (one worker, or all of them with a zone), replayed
    event by event; ``eligibility`` answers for any time the replay has reached."""

    def __init__(self, policy: UpstreamPolicy) -> None:
        self.policy = policy
        self.peers: dict[str, _Peer] = {}
        # (when, how far that may be off, peer, fails, accessed, checked), in replay order.
        self.history: list[tuple[float, float, str, int, int, int]] = []

    def _peer(self, backend: str) -> _Peer:
        return self.peers.setdefault(backend, _Peer())

    def _record(self, at: float, slack: float, backend: str) -> None:
        p = self._peer(backend)
        self.history.append((at, slack, backend, p.fails, p.accessed, p.checked))

    def select(self, attempt: Attempt) -> None:
        """get_peer chose ``attempt.backend`` at its start."""
        server = self.policy.peer(attempt.backend)
        p = self._peer(attempt.backend)
        now = _second(attempt.started_at)
        if now - p.checked > server.fail_timeout_s:
            p.checked = now
            self._record(attempt.started_at, attempt.slack_s, attempt.backend)

    def free(self, attempt: Attempt) -> CounterChange | None:
        """free_peer at the attempt's end; the change it made, if any."""
        if self.policy.single:
            return None         # NGINX's single-server group counts nothing
        p = self._peer(attempt.backend)
        now = _second(attempt.ended_at)
        if attempt.failed:
            p.fails += 1
            p.accessed = p.checked = now
            self._record(attempt.ended_at, attempt.slack_s, attempt.backend)
            return CounterChange(attempt.ended_at, attempt.backend, attempt.worker, p.fails,
                                 True, attempt)
        if p.accessed < p.checked and p.fails:
            p.fails = 0
            self._record(attempt.ended_at, attempt.slack_s, attempt.backend)
            return CounterChange(attempt.ended_at, attempt.backend, attempt.worker, 0, False,
                                 attempt)
        return None

    def _states(self, backend: str, lo: float, hi: float) -> list[tuple[int, int]]:
        """(fails, checked) as they may have been at some time in [lo, hi]: the state after
        every change certainly before ``lo``, and after each change that may fall inside."""
        certain = (0, 0)
        possible: list[tuple[int, int]] = []
        for at, slack, peer, fails, _accessed, checked in self.history:
            if peer != backend:
                continue
            if at + slack < lo:
                certain = (fails, checked)
            elif at - slack <= hi:
                possible.append((fails, checked))
        return [certain, *possible]

    def eligibility(self, backend: str, t: float, slack_s: float) -> Eligibility:
        """Whether ``backend`` could be chosen at a select in [t, t + slack], for every state
        and whole second that interval allows."""
        server = self.policy.peer(backend)
        if server.max_fails == 0 or self.policy.single:
            return Eligibility.ELIGIBLE
        lo, hi = t - BASE_SLACK_S, t + slack_s + BASE_SLACK_S
        answers = {fails >= server.max_fails and now - checked <= server.fail_timeout_s
                   for fails, checked in self._states(backend, lo, hi)
                   for now in {_second(lo), _second(hi)}}
        if answers == {True}:
            return Eligibility.SKIPPED
        if answers == {False}:
            return Eligibility.ELIGIBLE
        return Eligibility.AMBIGUOUS


# -- the balancer -------------------------------------------------------------------------------


class ViolationKind(StrEnum):
    """A routing decision the configuration does not allow."""

    ROUTED_WHILE_SKIPPED = "routed-while-skipped"    # the counters said skip; NGINX routed
    SKIPPED_WHILE_DUE = "skipped-while-due"          # the balancer's turn; NGINX skipped it
    NO_LIVE_WHILE_ELIGIBLE = "no-live-while-eligible"
    RETRY_NOT_ALLOWED = "retry-not-allowed"          # retried where the config forbids it
    RETRY_MISSING = "retry-missing"                  # not retried where the config retries
    TIMEOUT_DURATION = "timeout-duration"            # a timeout that is not the one configured


@dataclass(frozen=True)
class Violation:
    """One decision NGINX made that its configuration does not explain."""

    kind: ViolationKind
    at: float
    backend: str
    detail: str


@dataclass
class _Swrr:
    """The smooth weighted round robin's state, as a set of states the log is consistent
    with (the state at the start of the log is unknown; the choices narrow it down)."""

    weights: dict[str, int]
    states: set[tuple[tuple[int, int], ...]] = field(default_factory=set)
    order: tuple[str, ...] = ()

    def reset(self) -> None:
        """Every state NGINX's round robin can be in: those reachable from its start (every
        current weight 0) by choices over any set of candidates (computed once per weight
        set), with the effective weights the states held so far (lowered by failures, which
        starting over does not undo)."""
        base = _reachable(tuple(self.weights[n] for n in self.order))
        kept = {tuple(e for _, e in state) for state in self.states}
        if not kept:
            self.states = set(base)
            return
        self.states = {tuple(zip((c for c, _ in b), ew, strict=True)) for b in base
                       for ew in kept}

    def predictions(self, candidates: Sequence[str]) -> dict[str, set[tuple[tuple[int, int],
                                                                            ...]]]:
        """Chosen peer -> the states (after the choice) that choose it."""
        out: dict[str, set[tuple[tuple[int, int], ...]]] = {}
        index = {n: i for i, n in enumerate(self.order)}
        for state in self.states:
            cw = [c for c, _ in state]
            ew = [e for _, e in state]
            total, best = 0, None
            for name in self.order:
                if name not in candidates:
                    continue
                i = index[name]
                cw[i] += ew[i]
                total += ew[i]
                if ew[i] < self.weights[name]:
                    ew[i] += 1
                if best is None or cw[i] > cw[best]:
                    best = i
            if best is None:
                continue
            cw[best] -= total
            out.setdefault(self.order[best], set()).add(tuple(zip(cw, ew, strict=True)))
        return out

    def force(self, chosen: str, candidates: Sequence[str]) -> None:
        """Apply NGINX's choice to every state (the log shows it happened)."""
        index = {n: i for i, n in enumerate(self.order)}
        new = set()
        for state in self.states:
            cw = [c for c, _ in state]
            ew = [e for _, e in state]
            total = 0
            for name in self.order:
                if name not in candidates:
                    continue
                i = index[name]
                cw[i] += ew[i]
                total += ew[i]
                if ew[i] < self.weights[name]:
                    ew[i] += 1
            if chosen in index:
                cw[index[chosen]] -= total
            new.add(tuple(zip(cw, ew, strict=True)))
        self.states = new

    def failed(self, backend: str, server: UpstreamServer) -> None:
        """A counted failure lowers the peer's effective weight by weight // max_fails."""
        if not server.max_fails or backend not in self.order:
            return
        i = self.order.index(backend)
        drop = server.weight // server.max_fails
        if not drop:
            return
        self.states = {tuple((c, max(0, e - drop)) if j == i else (c, e)
                             for j, (c, e) in enumerate(state)) for state in self.states}


@functools.cache
def _reachable(weights: tuple[int, ...]) -> frozenset[tuple[tuple[int, int], ...]]:
    start = tuple((0, w) for w in weights)
    seen = {start}
    frontier = [start]
    subsets = [c for k in range(1, len(weights) + 1)
               for c in itertools.combinations(range(len(weights)), k)]
    while frontier:
        state = frontier.pop()
        for subset in subsets:
            cw = [c for c, _ in state]
            total, best = 0, None
            for i in subset:
                cw[i] += weights[i]
                total += weights[i]
                if best is None or cw[i] > cw[best]:
                    best = i
            assert best is not None
            cw[best] -= total
            nxt = tuple((c, w) for c, w in zip(cw, weights, strict=True))
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
        if len(seen) > 20_000:
            break
    return frozenset(seen)


@dataclass(frozen=True)
class Replay:
    """What the log shows NGINX did, judged decision by decision against its configuration."""

    policy: UpstreamPolicy
    requests: tuple[Request, ...]
    changes: tuple[CounterChange, ...]
    violations: tuple[Violation, ...]
    judged: int                # routing decisions judged
    ambiguous: int             # decisions the timing slack left open
    balancer_judged: bool      # whether "skipped while due" could be judged at all
    balancer_note: str         # why not, or how
    domains: tuple[int, ...]   # the counter domains (0: one shared domain)
    counters: Mapping[int, Counters]

    def attempts_on(self, backend: str) -> list[Attempt]:
        """Every attempt on ``backend``, by start time."""
        return sorted((a for r in self.requests for a in r.attempts if a.backend == backend),
                      key=lambda a: a.started_at)

    def eligibility(self, backend: str, t: float, domain: int | None = None) -> Eligibility:
        """Whether the counters let NGINX choose ``backend`` at ``t`` (every domain agreeing)."""
        found = {self.counters[d].eligibility(backend, t, BASE_SLACK_S)
                 for d in (self.domains if domain is None else (domain,))}
        return found.pop() if len(found) == 1 else Eligibility.AMBIGUOUS

    def skipped_from(self, backend: str, start: float,
                     end: float) -> list[tuple[float, float, int]]:
        """The periods in [start, end) the counters skip ``backend``: (from, until, domain),
        from the failure that reached max_fails until the first second the peer is eligible."""
        server = self.policy.peer(backend)
        periods = []
        if not server.max_fails:
            return periods
        for change in self.changes:
            if (change.backend != backend or not change.counted
                    or change.fails < server.max_fails or not start <= change.at < end):
                continue
            until = _second(change.at) + server.fail_timeout_s + 1
            periods.append((change.at, until, change.attempt.worker if not
                            self.policy.shared_counters else 0))
        return periods


def _candidates(order: Sequence[str], tried: set[str], down: set[str]) -> list[str]:
    return [n for n in order if n not in tried and n not in down]


def retry_allowed(policy: UpstreamPolicy, attempt: Attempt, elapsed_s: float,
                   tries_limit: int) -> tuple[bool, str]:
    """Whether the configuration lets NGINX retry after this failed attempt, and why not."""
    if attempt.end is AttemptEnd.RESPONSE:
        condition = f"http_{attempt.status}"
    elif attempt.end in CONDITION:
        condition = CONDITION[attempt.end]
    else:
        return False, "the client gave up (499)"
    if condition not in policy.next_upstream:
        listed = " ".join(policy.next_upstream) or "off"
        return False, f"proxy_next_upstream {listed} lacks {condition}"
    # NGINX marks the request sent as soon as it writes on a connection (request_sent, set
    # before the write in ngx_http_upstream_send_request): a read timeout, an answer, and an
    # error on a connection that was made (a reused keepalive connection logs connect time 0)
    # all come after that.
    sent = attempt.end in (AttemptEnd.READ_TIMEOUT, AttemptEnd.RESPONSE) or (
        attempt.end is AttemptEnd.ERROR and attempt.connect_s is not None)
    if sent and attempt.method in NON_IDEMPOTENT and "non_idempotent" not in policy.next_upstream:
        return False, f"a {attempt.method} already sent is not retried without non_idempotent"
    if policy.single:
        return False, "a single-server upstream ends its tries after the first"
    if attempt.index + 1 >= tries_limit:
        return False, f"proxy_next_upstream_tries {tries_limit} used up"
    if policy.next_upstream_timeout_s and elapsed_s >= policy.next_upstream_timeout_s:
        return False, (f"proxy_next_upstream_timeout {policy.next_upstream_timeout_s:g} s "
                       f"passed ({elapsed_s:.3f} s)")
    return True, ""


def replay(log: Sequence[AccessLogEntry], policy: UpstreamPolicy, *,
           policy_for: Callable[[str], UpstreamPolicy] | None = None,
           learned_until: float | None = None) -> Replay:
    """Replay the pool's counters over the whole log and judge every routing decision.

    ``policy_for(uri)`` gives the settings a request met at its location (retries, timeouts);
    ``learned_until`` ends the period whose healthy traffic teaches a hash balancer which
    server each key goes to (None: the whole log)."""
    policy_for = policy_for or (lambda _uri: policy)
    requests = requests_to_pool(log, policy)
    members = policy.members or tuple(UpstreamServer(n, n, 1, policy.max_fails,
                                                     policy.fail_timeout_s) for n in
                                      policy.servers)
    primary = tuple(m.node for m in members if not m.backup and not m.down)
    backups = tuple(m.node for m in members if m.backup and not m.down)
    down = {m.node for m in members if m.down}
    shared = policy.shared_counters
    workers = sorted({r.entry_log.worker for r in requests}) or [0]
    domains = (0,) if shared else tuple(workers)
    counters = {d: Counters(policy) for d in domains}
    violations: list[Violation] = []
    changes: list[CounterChange] = []
    judged = ambiguous = 0

    events: list[_Event] = []
    for r in requests:
        for a in r.attempts:
            events.append(_Event(a.started_at, 1, a, "select"))
            events.append(_Event(a.ended_at, 0, a, "free"))
    events.sort(key=lambda e: (e.at, e.order))

    # First pass: the counters (they depend only on what ended, when).
    for event in events:
        domain = 0 if shared else event.attempt.worker
        if event.kind == "select":
            counters[domain].select(event.attempt)
        else:
            change = counters[domain].free(event.attempt)
            if change is not None:
                changes.append(change)

    # Second pass: every routing decision against those counters.
    capacity = _Capacity(policy, requests, shared)
    balancer = _Balancer(policy, primary, down, counters, shared, requests, learned_until)
    balancer.capacity = capacity
    by_request = {r.entry: r for r in requests}
    selects: dict[int, list[tuple[Attempt, Request]]] = {}
    for event in events:
        if event.kind != "select":
            continue
        a = event.attempt
        domain = 0 if shared else a.worker
        request = by_request[a.entry]
        selects.setdefault(domain, []).append((a, request))
        state = counters[domain].eligibility(a.backend, a.started_at, a.slack_s)
        judged += 1
        if state is Eligibility.SKIPPED:
            server = policy.peer(a.backend)
            violations.append(Violation(
                ViolationKind.ROUTED_WHILE_SKIPPED, a.started_at, a.backend,
                f"attempt {a.index + 1} of a {a.method} {a.uri} went to {a.backend} while its "
                f"counters said skip (max_fails {server.max_fails} counted within fail_timeout "
                f"{server.fail_timeout_s:g} s)"))
        elif state is Eligibility.AMBIGUOUS:
            ambiguous += 1
        elif capacity.state(domain, a.backend, a.started_at, a.slack_s, a) \
                is Eligibility.SKIPPED:
            violations.append(Violation(
                ViolationKind.ROUTED_WHILE_SKIPPED, a.started_at, a.backend,
                f"attempt {a.index + 1} of a {a.method} {a.uri} went to {a.backend} with "
                f"max_conns={policy.peer(a.backend).max_conns} tries already in flight"))
        if a.backend in backups:
            # Backup servers are tried only when no primary is left (get_round_robin_peer's
            # "failed:" branch).
            tried = {b.backend for b in request.attempts[:a.index]}
            open_ = [n for n in primary if n not in tried and n not in down and counters[
                domain].eligibility(n, a.started_at, a.slack_s) is Eligibility.ELIGIBLE]
            if open_:
                violations.append(Violation(
                    ViolationKind.SKIPPED_WHILE_DUE, a.started_at, open_[0],
                    f"NGINX went to backup {a.backend} while primary {open_[0]}'s counters "
                    "let it be chosen"))
    balancer.failures = {d: [c for c in changes if c.counted and
                             (0 if shared else c.domain) == d] for d in domains}
    for domain, chosen in selects.items():
        ambiguous += balancer.judge(domain, chosen, violations)

    # No live upstream: NGINX found nothing to try; every untried primary must be skipped.
    for r in requests:
        if not r.no_live:
            continue
        domain = 0 if shared else r.entry_log.worker
        t = r.attempts[-1].ended_at if r.attempts else r.entry_log.started_at
        tried = {a.backend for a in r.attempts}
        for node in (*primary, *backups):
            if node in tried or node in down:
                continue
            state = _both(counters[domain].eligibility(node, t, BASE_SLACK_S),
                          capacity.state(domain, node, t, BASE_SLACK_S))
            if state is Eligibility.ELIGIBLE:
                violations.append(Violation(
                    ViolationKind.NO_LIVE_WHILE_ELIGIBLE, t, node,
                    f"NGINX answered 'no live upstreams' for a {r.entry_log.method} "
                    f"{r.entry_log.uri} while {node}'s counters and max_conns let it be "
                    "tried"))
                break

    # Retries and timeouts, request by request, against the settings of its location.
    for r in requests:
        located = policy_for(r.entry_log.uri)
        peers = len(primary) + len(backups)
        tries_limit = min(located.next_upstream_tries or peers, peers)
        first = r.attempts[0].started_at if r.attempts else r.entry_log.started_at
        for a in r.attempts:
            if not a.failed and a.end is not AttemptEnd.RESPONSE:
                continue
            retryable_end = a.end in CONDITION or (a.end is AttemptEnd.RESPONSE
                                                  and f"http_{a.status}"
                                                  in located.next_upstream)
            if not retryable_end:
                continue
            allowed, why = retry_allowed(located, a, a.ended_at - first, tries_limit)
            if a.retried and not allowed:
                violations.append(Violation(
                    ViolationKind.RETRY_NOT_ALLOWED, a.ended_at, a.backend,
                    f"a {a.method} {a.uri} was tried again after {a.end.value} on {a.backend}, "
                    f"though {why}"))
            elif not a.retried and allowed and a.end is not AttemptEnd.RESPONSE:
                untried = [n for n in (*primary, *backups) if n not in
                           {b.backend for b in r.attempts} and n not in down]
                if untried:
                    violations.append(Violation(
                        ViolationKind.RETRY_MISSING, a.ended_at, a.backend,
                        f"a {a.method} {a.uri} got {r.entry_log.status} after {a.end.value} "
                        f"on {a.backend} without a retry, though the configuration retries it "
                        f"({', '.join(untried)} untried)"))
    violations += _timeout_violations(requests, policy_for)
    violations.sort(key=lambda v: v.at)
    return Replay(policy, tuple(requests), tuple(changes), tuple(violations), judged, ambiguous,
                  balancer.judges, balancer.note, domains, counters)


def _timeout_violations(requests: Sequence[Request],
                        policy_for: Callable[[str], UpstreamPolicy]) -> list[Violation]:
    """A timed-out attempt never ends before its timeout (NGINX's timers never fire early;
    a read timeout's clock starts once connected) and, in a run, the promptest one fires
    within one event-loop pass of it: a timeout that is not the configured one shows either
    way. How long a pass takes is measured in the same run, as the longest time NGINX spent
    on a request outside its upstream attempts."""
    by_timeout: dict[tuple[str, float], list[tuple[Attempt, float]]] = {}
    out = []
    overhead = max((r.entry_log.request_time_s - sum(a.duration_s for a in r.attempts)
                    for r in requests if r.attempts), default=0.0)
    for r in requests:
        located = policy_for(r.entry_log.uri)
        for a in r.attempts:
            if a.end is AttemptEnd.CONNECT_TIMEOUT:
                limit, name, waited = located.connect_timeout_s, "proxy_connect_timeout", \
                    a.duration_s
            elif a.end is AttemptEnd.READ_TIMEOUT:
                limit, name = located.read_timeout_s, "proxy_read_timeout"
                waited = a.duration_s - (a.connect_s or 0.0)
            else:
                continue
            if located.next_upstream_timeout_s:
                # The retry budget cuts an attempt short (ngx_http_upstream_next's timer).
                continue
            by_timeout.setdefault((name, limit), []).append((a, waited))
            if waited < limit - 0.001:
                out.append(Violation(ViolationKind.TIMEOUT_DURATION, a.started_at, a.backend,
                                     f"{a.end.value} after {waited:.3f} s, before {name} "
                                     f"{limit:g} s"))
    for (name, limit), timed in by_timeout.items():
        prompt, waited = min(timed, key=lambda item: item[1])
        # The log's two millisecond readings, and one pass of the worker's event loop.
        allowance = 0.002 + max(0.0, overhead)
        if waited > limit + allowance:
            out.append(Violation(ViolationKind.TIMEOUT_DURATION, prompt.started_at,
                                 prompt.backend,
                                 f"the promptest of {len(timed)} {prompt.end.value}s waited "
                                 f"{waited:.3f} s, more than {name} {limit:g} s + "
                                 f"{allowance * 1000:.0f} ms (one event-loop pass, measured)"))
    return out


Select = tuple[Attempt, Request]


class _Flights:
    """Tries in flight per server (and worker without a zone), from the log's intervals."""

    def __init__(self, requests: Sequence[Request], shared: bool) -> None:
        self.spans: dict[tuple[int, str], list[Attempt]] = {}
        for r in requests:
            for a in r.attempts:
                self.spans.setdefault((0 if shared else a.worker, a.backend), []).append(a)

    def range(self, domain: int, backend: str, lo: float, hi: float,
              own: Attempt) -> tuple[int, int]:
        """(fewest, most) tries of ``backend`` in flight at a select in [lo, hi]."""
        certain = possible = 0
        for a in self.spans.get((domain, backend), ()):
            if a is own:
                continue
            start_lo, start_hi = a.started_at, a.started_at + a.slack_s
            end_lo, end_hi = a.ended_at, a.ended_at + a.slack_s
            if start_hi < lo and end_lo > hi:
                certain += 1
            elif start_lo <= hi and end_hi >= lo:
                possible += 1
        return certain, certain + possible


class _Capacity:
    """``max_conns``: a server with that many tries in flight (in its worker, or in all with a
    zone) is skipped like a failed one; with every server skipped NGINX answers "no live
    upstreams" (``get_round_robin_peer``'s single-server branch checks it too)."""

    def __init__(self, policy: UpstreamPolicy, requests: Sequence[Request],
                 shared: bool) -> None:
        self.limits = {m.node: m.max_conns for m in policy.members if m.max_conns}
        self.flights = _Flights(requests, shared) if self.limits else None

    def state(self, domain: int, node: str, t: float, slack_s: float,
              own: Attempt | None = None) -> Eligibility:
        """Whether ``node`` had room for one more try at a select in [t, t + slack]."""
        limit = self.limits.get(node)
        if not limit or self.flights is None:
            return Eligibility.ELIGIBLE
        lo, hi = t - BASE_SLACK_S, t + slack_s + BASE_SLACK_S
        fewest, most = self.flights.range(domain, node, lo, hi, own)  # type: ignore[arg-type]
        if fewest >= limit:
            return Eligibility.SKIPPED
        return Eligibility.AMBIGUOUS if most >= limit else Eligibility.ELIGIBLE


def _both(counted: Eligibility, room: Eligibility) -> Eligibility:
    """A server can be chosen when its counters and its max_conns both let it."""
    if Eligibility.SKIPPED in (counted, room):
        return Eligibility.SKIPPED
    if Eligibility.AMBIGUOUS in (counted, room):
        return Eligibility.AMBIGUOUS
    return Eligibility.ELIGIBLE


def _clusters(selects: Sequence[Select]) -> list[list[Select]]:
    """Selects whose times the log cannot order (their intervals overlap), grouped; the
    groups themselves are in order."""
    out: list[list[Select]] = []
    end = -math.inf
    for item in sorted(selects, key=lambda s: s[0].started_at):
        a = item[0]
        if out and a.started_at <= end:
            out[-1].append(item)
        else:
            out.append([item])
        end = max(end if len(out[-1]) > 1 else -math.inf, a.started_at + a.slack_s)
    return out


class _Balancer:
    """Judges whether NGINX skipped a peer that its balancer had to choose."""

    # Orders of a cluster tried at most (a cluster of 5 has 120; beyond, it is not judged).
    MAX_ORDERS = 120

    def __init__(self, policy: UpstreamPolicy, primary: tuple[str, ...], down: set[str],
                 counters: Mapping[int, Counters], shared: bool,
                 requests: Sequence[Request], learned_until: float | None) -> None:
        self.policy = policy
        self.primary = primary
        self.down = down
        self.counters = counters
        self.shared = shared
        self.judges = False
        self.note = ""
        self.keys: dict[str, str] = {}
        # Each domain's counted failures in time order: each lowers the round robin's
        # effective weight of its peer (free_round_robin_peer).
        self.failures: dict[int, list[CounterChange]] = {}
        self.capacity = _Capacity(policy, (), shared)
        method = policy.balancing
        if method == "round_robin":
            self.judges = True
            self.note = ("smooth weighted round robin replayed (its starting state narrowed "
                         "down from the choices NGINX made)")
        elif method in ("ip_hash", "hash"):
            self.keys = self._learn(requests, learned_until)
            self.judges = bool(self.keys)
            self.note = (f"{method}: each key's server learned from the healthy traffic "
                         f"({len(self.keys)} keys)" if self.keys else
                         f"{method} on {policy.hash_key or 'the client address'}: the key is "
                         "not in the access log, so which server a request was due to cannot "
                         "be told")
        elif method == "least_conn":
            self.judges = True
            self.note = ("least_conn: a server is due when it alone has the fewest connections "
                         "per weight (in flight, from the log's tries); ties go round robin and "
                         "are not judged")
            self.flights = _Flights(requests, shared)
        else:
            self.note = (f"{method} chooses at random: whether NGINX skipped a server it had to "
                         "choose cannot be told from one log")

    def _key(self, request: Request) -> str | None:
        e = request.entry_log
        if self.policy.balancing == "ip_hash":
            parts = e.remote_addr.split(".")
            return ".".join(parts[:3]) if len(parts) == 4 else e.remote_addr or None
        key = self.policy.hash_key
        if key in ("$request_uri", "$uri"):
            return e.uri
        if key in ("$remote_addr", "$binary_remote_addr"):
            return e.remote_addr or None
        return None

    def _learn(self, requests: Sequence[Request], until: float | None) -> dict[str, str]:
        seen: dict[str, set[str]] = {}
        for r in requests:
            if not r.attempts or (until is not None and r.entry_log.started_at >= until):
                continue
            key = self._key(r)
            if key is None:
                return {}
            seen.setdefault(key, set()).add(r.attempts[0].backend)
        return {k: next(iter(v)) for k, v in seen.items() if len(v) == 1}

    def _candidates(self, domain: int, attempt: Attempt,
                    request: Request) -> tuple[list[str], list[str]]:
        """The primaries the counters certainly let NGINX choose, and those they may."""
        tried = {b.backend for b in request.attempts[:attempt.index]}
        certain, uncertain = [], []
        for node in self.primary:
            if node in tried or node in self.down:
                continue
            state = _both(self.counters[domain].eligibility(node, attempt.started_at,
                                                            attempt.slack_s),
                          self.capacity.state(domain, node, attempt.started_at,
                                              attempt.slack_s, attempt))
            if state is Eligibility.ELIGIBLE:
                certain.append(node)
            elif state is Eligibility.AMBIGUOUS:
                uncertain.append(node)
        return certain, uncertain

    def judge(self, domain: int, selects: Sequence[Select],
              violations: list[Violation]) -> int:
        """Judge one domain's selects in order; the number left ambiguous."""
        if self.policy.balancing == "round_robin":
            return self._judge_swrr(domain, selects, violations)
        if self.policy.balancing == "least_conn":
            return self._judge_least_conn(domain, selects, violations)
        if self.keys:
            for attempt, request in selects:
                if attempt.index:
                    continue
                key = self._key(request)
                due = self.keys.get(key) if key is not None else None
                certain, uncertain = self._candidates(domain, attempt, request)
                if (due is not None and due in certain and attempt.backend != due
                        and not uncertain):
                    violations.append(Violation(
                        ViolationKind.SKIPPED_WHILE_DUE, attempt.started_at, due,
                        f"{self.policy.balancing} sends this key to {due}, whose counters let "
                        f"it be chosen; NGINX sent it to {attempt.backend}"))
        return 0

    def _judge_least_conn(self, domain: int, selects: Sequence[Select],
                          violations: list[Violation]) -> int:
        ambiguous = 0
        for attempt, request in selects:
            certain, uncertain = self._candidates(domain, attempt, request)
            if attempt.backend not in certain + uncertain or len(certain) < 2 or uncertain:
                continue
            lo, hi = attempt.started_at, attempt.started_at + attempt.slack_s
            load = {n: self.flights.range(domain, n, lo, hi, attempt)
                    for n in certain}
            weight = {n: self.policy.peer(n).weight for n in certain}
            # NGINX's choice must have the fewest connections per weight: it did not when
            # another candidate had fewer under every count the timing allows.
            chosen = attempt.backend
            fewer = [m for m in certain if m != chosen
                     and load[m][1] * weight[chosen] < load[chosen][0] * weight[m]]
            if fewer:
                violations.append(Violation(
                    ViolationKind.SKIPPED_WHILE_DUE, attempt.started_at, fewer[0],
                    f"least_conn: {fewer[0]} had {load[fewer[0]][1]} tries in flight against "
                    f"{chosen}'s {load[chosen][0]} and its counters let it be chosen; NGINX "
                    f"chose {chosen}"))
            elif load[chosen][0] != load[chosen][1]:
                ambiguous += 1
        return ambiguous

    def _judge_swrr(self, domain: int, selects: Sequence[Select],
                    violations: list[Violation]) -> int:
        weights = {n: self.policy.peer(n).weight for n in self.primary}
        swrr = _Swrr(weights, order=self.primary)
        swrr.reset()
        ambiguous = 0
        failures = sorted(self.failures.get(domain, ()), key=lambda c: c.at)
        applied = 0
        for cluster in _clusters(selects):
            # A failure counted before this cluster's selects lowers its peer's effective
            # weight first; one the log's timing cannot order against them may have come
            # either side, so both states stay possible.
            first = min(a.started_at for a, _ in cluster)
            ids = {id(a) for a, _ in cluster}
            while applied < len(failures) and \
                    failures[applied].at - failures[applied].attempt.slack_s - BASE_SLACK_S \
                    <= first and id(failures[applied].attempt) not in ids:
                # (A failure whose own select is in this cluster comes after it.)
                change = failures[applied]
                before = set(swrr.states)
                swrr.failed(change.backend, self.policy.peer(change.backend))
                if change.at + change.attempt.slack_s + BASE_SLACK_S > first:
                    swrr.states |= before
                applied += 1
            steps = [(a, *self._candidates(domain, a, r)) for a, r in cluster
                     if a.backend in weights]
            if not steps:
                continue
            orders = list(itertools.islice(itertools.permutations(steps), self.MAX_ORDERS))
            survivors: set[tuple[tuple[int, int], ...]] = set()
            firsts: list[tuple[str | None, Attempt, list[str]]] = []
            for order in orders:
                states = set(swrr.states)
                failed_at = None
                for attempt, certain, uncertain in order:
                    options = [certain + list(extra) for k in range(len(uncertain) + 1)
                               for extra in itertools.combinations(uncertain, k)]
                    nxt: set[tuple[tuple[int, int], ...]] = set()
                    predicted: set[str] = set()
                    for option in options:
                        chosen = _predict(swrr, states, option)
                        predicted |= set(chosen)
                        nxt |= chosen.get(attempt.backend, set())
                    if not nxt:
                        due = next(iter(predicted)) if len(predicted) == 1 and \
                            not uncertain else None
                        failed_at = (due, attempt, certain)
                        break
                    states = nxt
                if failed_at is None:
                    survivors |= states
                else:
                    firsts.append(failed_at)
            if survivors:
                swrr.states = survivors
                if len(orders) > 1 or any(u for _, _, u in steps):
                    ambiguous += 1
                continue
            dues = {due for due, _, _ in firsts}
            attempt, certain = firsts[0][1], firsts[0][2]
            if len(dues) == 1 and None not in dues and len(orders) < self.MAX_ORDERS:
                (due,) = dues
                violations.append(Violation(
                    ViolationKind.SKIPPED_WHILE_DUE, attempt.started_at, due,
                    f"round robin's turn was {due}'s (its counters let it be chosen), NGINX "
                    f"chose {attempt.backend}"))
                swrr.states = _apply_all(swrr, swrr.states, steps)
                continue
            # Out of step (an order or a state the log cannot pin down): start over from every
            # state, and let the next choices narrow it down again.
            ambiguous += 1
            swrr.reset()
            swrr.states = _apply_all(swrr, swrr.states, steps)
        return ambiguous


def _predict(swrr: _Swrr, states: Iterable[tuple[tuple[int, int], ...]],
             candidates: Sequence[str]) -> dict[str, set[tuple[tuple[int, int], ...]]]:
    saved = swrr.states
    swrr.states = set(states)
    try:
        return swrr.predictions(candidates)
    finally:
        swrr.states = saved


def _apply_all(swrr: _Swrr, states: set[tuple[tuple[int, int], ...]],
               steps: Sequence[tuple[Attempt, list[str], list[str]]]
               ) -> set[tuple[tuple[int, int], ...]]:
    """Every state after NGINX's choices in ``steps`` (in log order), whatever it predicted."""
    saved = swrr.states
    swrr.states = set(states)
    try:
        for attempt, certain, uncertain in steps:
            swrr.force(attempt.backend, certain + uncertain
                       if attempt.backend in certain + uncertain else
                       [*certain, *uncertain, attempt.backend])
        return swrr.states
    finally:
        swrr.states = saved
