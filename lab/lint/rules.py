"""The lint rules, one name each, in the order ``lab lint`` prints them.

Each rule reads the configuration in force (``LintInput``) and returns its findings; the
consequences quote what the lab measured (README, "What the lab measured") and the NGINX,
PgBouncer and Redis rules in docs/semantics.md.

The NGINX rules look at every location that proxies to the backend pool (a ``/api/``
location may have its own timeouts and retries), grouped when their settings are the same,
and do their arithmetic at the rate of the traffic the review is for (``LintInput.traffic``:
a scenario's streams, failover's by default). What one request routed to a failed backend
meets depends on how the backend failed (``FailureMode``) and on the location's settings; a
consequence says what *this* configuration does with it: a retry only where NGINX makes one,
an ejection only where NGINX counts the failures that lead to it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from lab.checks import CHECKS
from lab.checks.availability import DURABILITY
from lab.checks.availability import NAME as AVAILABILITY
from lab.checks.distribution import NAME as DISTRIBUTION
from lab.checks.ejection import NAME as EJECTION
from lab.checks.health import DETAILED_TIMING
from lab.checks.health import NAME as HEALTH_CONTRACT
from lab.checks.latency import NAME as LATENCY
from lab.checks.locks import EXCLUSIVITY, FENCING, TAKEOVER
from lab.checks.locks_store import EVICTION, HOLDERS, PAUSED, STORE_RESTART
from lab.checks.pool import NAME as POOL_BOUND
from lab.checks.rate_limit import NAME as RATE_LIMIT
from lab.checks.readmission import NAME as READMISSION
from lab.checks.upstream_replay import NON_IDEMPOTENT
from lab.expectations import (
    ExpectationUnavailable,
    FailureMode,
    LocationPolicy,
    NginxPolicy,
    UpstreamPolicy,
    failed_attempt_cost,
)
from lab.lint.model import Finding, Level, LintInput, Rule, Stream
from lab.registry import Registry
from lab.scenarios.model import TrafficStream
from lab.topology.nginx_policy import route
from lab.topology.nginx_tree import Directive, walk
from lab.topology.user_nginx import UNPROVIDABLE
from lab.units import text_seconds

RULES: Registry[Rule] = Registry("lint rule")

# PostgreSQL keeps this many of max_connections for superusers (its default).
SUPERUSER_RESERVED = 3
# Keys that tell clients apart: one bucket per client address (or per client identity).
CLIENT_KEYS = ("$binary_remote_addr", "$remote_addr", "$realip_remote_addr",
               "$http_x_forwarded_for", "$http_x_real_ip", "$proxy_protocol_addr",
               "$http_authorization", "$cookie_", "$arg_", "$jwt_")
# Linux resends an unanswered SYN after its initial retransmission timeout, 1 s (TCP_TIMEOUT_INIT,
# RFC 6298): a connect timeout below it fails a healthy backend whose first SYN was dropped (a
# full listen backlog under load, one lost packet) before the resent one can arrive.
SYN_RETRANSMIT_S = 1.0
# How long a client waits when the scenario names no stream: the lab's clients' default.
CLIENT_TIMEOUT_S: float = TrafficStream.model_fields["timeout_s"].default
_EJECTION = frozenset({EJECTION, READMISSION})
_LOCKS = frozenset({EXCLUSIVITY, FENCING, HOLDERS, TAKEOVER, PAUSED, STORE_RESTART, EVICTION})


def rule(name: str, summary: str, concerns: frozenset[str] = frozenset()):
    """Register the decorated function as the lint rule ``name``; every name in ``concerns``
    must be a registered check (a typo would silently hide the finding from ``lab run``)."""
    unknown = sorted(c for c in concerns if c not in CHECKS)
    if unknown:
        raise TypeError(f"lint rule {name!r}: concerns {', '.join(map(repr, unknown))} "
                        f"name no check (checks: {', '.join(CHECKS.names())})")

    def add(check):
        RULES.add(Rule(name, summary, check, concerns))
        return check
    return add


def _upstream(lint: LintInput) -> UpstreamPolicy | None:
    try:
        return lint.expectations.upstream
    except ExpectationUnavailable:
        return None


def _find(tree: Sequence[Directive], name: str, *args: str) -> Directive | None:
    return next((d for d in walk(tree) if d.name == name and d.args[:len(args)] == args), None)


def _upstream_where(lint: LintInput, upstream: UpstreamPolicy) -> str:
    block = _find(lint.tree, "upstream", upstream.name)
    if block is None:
        return lint.nginx_source
    server = next((d for d in block.block or () if d.name == "server"), block)
    return server.where


def _scopes(tree: Sequence[Directive], where: str) -> tuple[Sequence[Directive], ...]:
    """The blocks whose directives are in force at the location written at ``where``,
    innermost first (the location, its parent locations, its server, http, the main file)."""
    def search(block: Sequence[Directive], outer: tuple[Sequence[Directive], ...]
               ) -> tuple[Sequence[Directive], ...] | None:
        for d in block:
            if d.block is None:
                continue
            if d.name == "location" and d.where == where:
                return (d.block, *outer)
            found = search(d.block, (d.block, *outer))
            if found is not None:
                return found
        return None
    return search(tree, (tree,)) or (tree,)


def _in_force(lint: LintInput, where: str, name: str) -> Directive | None:
    """The ``name`` directive in force at the location written at ``where`` (nginx's
    inheritance: the innermost level that sets it), None when NGINX's default applies."""
    for block in _scopes(lint.tree, where):
        found = [d for d in block if d.name == name]
        if found:
            return found[-1]
    return None


def _setting(lint: LintInput, where: str, name: str) -> str:
    """``proxy_read_timeout 60s (nginx.conf:12)``, or ``(not set: NGINX's default)``."""
    found = _in_force(lint, where, name)
    return f"({found.where})" if found is not None else "(not set: NGINX's default)"


# -- the backend pool, its locations and the traffic ------------------------------------------


@dataclass(frozen=True)
class _Route:
    """One location that proxies to the backend pool, and the streams the traffic sends it."""

    pattern: str
    where: str
    upstream: UpstreamPolicy
    streams: tuple[Stream, ...]


@dataclass(frozen=True)
class _Group:
    """Locations proxying to the pool with the same settings, the traffic through them, and
    the pool's: one finding covers them all."""

    routes: tuple[_Route, ...]
    scenario: str
    pool_rate_per_s: float           # every scenario stream the pool serves, summed
    client_timeout_s: float
    timeout_source: str
    # Every group of the pool (this one included): its settings, the scenario's req/s through
    # it and its clients' timeout. Failure counters belong to the server, not the location,
    # so what ejects a backend is the sum of every location's counted failures.
    siblings: tuple[tuple[UpstreamPolicy, float, float], ...] = ()

    @property
    def upstream(self) -> UpstreamPolicy:
        return self.routes[0].upstream

    @property
    def where(self) -> str:
        return self.routes[0].where

    @property
    def streams(self) -> tuple[Stream, ...]:
        return tuple(s for r in self.routes for s in r.streams)

    @property
    def rate_per_s(self) -> float:
        return sum(s.rate_per_s for s in self.streams)

    @property
    def label(self) -> str:
        return _label(self.routes)

    @property
    def share(self) -> float:
        """The share of the pool's requests the first primary server gets (its weight)."""
        weights = self.upstream.weights
        total = sum(weights.values())
        first = self.upstream.servers[0] if self.upstream.servers else None
        return weights[first] / total if first is not None and total else 1.0

    @property
    def share_text(self) -> str:
        n = len(self.upstream.servers)
        return f"1 in {n}" if math.isclose(self.share * n, 1.0) else f"{self.share:.0%}"

    @property
    def backend_rate(self) -> float:
        """Requests per second one backend is offered (round robin by weight)."""
        return self.pool_rate_per_s * self.share

    @property
    def counted(self) -> int:
        """Failures that eject a backend: max_fails, times the workers without a zone (each
        worker counts alone; the most it can take)."""
        up = self.upstream
        return up.max_fails * (1 if up.shared_counters else up.worker_processes)

    @property
    def counted_text(self) -> str:
        up = self.upstream
        if up.shared_counters:
            return f"max_fails {up.max_fails}"
        return f"max_fails {up.max_fails} x {up.worker_processes} workers (no zone)"

    @property
    def several(self) -> bool:
        """Whether there is another server to fail over to."""
        return len(self.upstream.servers) + len(self.upstream.backup_servers) > 1

    def traffic_text(self) -> str:
        """What the scenario sends through the pool and each backend."""
        up = self.upstream
        if self.pool_rate_per_s <= 0:
            return f"Scenario {self.scenario} sends no request through upstream {up.name}"
        return (f"Scenario {self.scenario} sends {self.pool_rate_per_s:g} req/s through "
                f"upstream {up.name} ({len(up.servers)} servers): {self.backend_rate:.3g} req/s "
                "reach each backend")


def _label(routes: Sequence[_Route]) -> str:
    """``location /api/`` or ``locations /api/auth/, / (nginx.conf:55 and 3 more)``."""
    patterns = list(dict.fromkeys(r.pattern for r in routes))
    more = len(routes) - 1
    return (f"location{'s' if len(patterns) > 1 else ''} {', '.join(patterns)}"
            + (f" ({routes[0].where} and {more} more)" if more else ""))


def _merged(name: str, level: Level, items: Sequence[tuple[_Group, str, str, str]]
            ) -> list[Finding]:
    """One finding per distinct (arithmetic, consequence, fix), naming every location it
    covers: a setting inherited from http or server reads the same at each location."""
    merged: dict[tuple[str, str, str], list[_Route]] = {}
    for group, body, consequence, fix in items:
        merged.setdefault((body, consequence, fix), []).extend(group.routes)
    return [Finding(name, level, routes[0].where, f"{_label(routes)}: {body}", consequence, fix)
            for (body, consequence, fix), routes in merged.items()]


def _location_of(nginx: NginxPolicy, path: str) -> LocationPolicy | None:
    """The location a plain request for ``path`` ends at, following a redirect to HTTPS as the
    lab's clients do."""
    port = 80
    if nginx.redirects(path, port) is not None and (tls := nginx.https_port()) is not None:
        port = tls
    return nginx.location_for(path, port)


def _groups(lint: LintInput) -> list[_Group]:
    """The pool's locations, grouped by identical settings, in file order."""
    try:
        nginx = lint.expectations.nginx
    except ExpectationUnavailable:
        return []
    pool = nginx.upstream.name
    streams = lint.traffic.streams
    reached = [(s, _location_of(nginx, s.path)) for s in streams]
    located = [loc for loc in nginx.locations
               if loc.upstream is not None and loc.upstream.name == pool]
    routes = [_Route(loc.pattern, loc.where, loc.upstream,  # type: ignore[arg-type]
                     tuple(s for s, at in reached if at is loc)) for loc in located]
    if not routes:
        # A policy without locations (built by hand): the pool as "/" meets it.
        routes = [_Route(nginx.upstream.location, lint.nginx_source, nginx.upstream, streams)]
    pool_rate = sum(s.rate_per_s for r in routes for s in r.streams)
    groups: dict[UpstreamPolicy, list[_Route]] = {}
    for r in routes:
        groups.setdefault(replace(r.upstream, location=""), []).append(r)
    out = []
    for members in groups.values():
        mine = [s for m in members for s in m.streams]
        if mine:
            timeout = min(s.timeout_s for s in mine)
            source = (f"scenario {lint.traffic.scenario}: "
                      f"{', '.join(sorted({s.client for s in mine}))}")
        elif streams:
            timeout = min(s.timeout_s for s in streams)
            source = f"scenario {lint.traffic.scenario}'s clients"
        else:
            timeout, source = CLIENT_TIMEOUT_S, "the lab's clients"
        out.append(_Group(tuple(members), lint.traffic.scenario, pool_rate, timeout, source))
    siblings = tuple((g.upstream, g.rate_per_s, g.client_timeout_s) for g in out)
    return [replace(g, siblings=siblings) for g in out]


# -- what a request routed to a failed backend meets ------------------------------------------


@dataclass(frozen=True)
class _Failure:
    """One way a backend fails, as NGINX meets it."""

    mode: FailureMode
    how: str                 # "killed", ...
    timeout: str             # the directive whose value one failed try costs ("" for none)
    condition: str           # the proxy_next_upstream condition it raises
    status: int              # what the client gets when it is not retried


KILLED = _Failure(FailureMode.UNREACHABLE, "killed", "proxy_connect_timeout", "timeout", 504)
FROZEN = _Failure(FailureMode.FROZEN, "frozen", "proxy_read_timeout", "timeout", 504)
REFUSED = _Failure(FailureMode.REFUSED, "down with its host up (connection refused)", "",
                   "error", 502)
FAILURES = (KILLED, FROZEN, REFUSED)


def _cost(group: _Group, failure: _Failure) -> float:
    return failed_attempt_cost(group.upstream, failure.mode)


def _abandoned(group: _Group, failure: _Failure) -> bool:
    """Whether the client gives up before NGINX's own timeout ends the try: NGINX then logs
    499 and frees the server with no failure (ngx_http_upstream_finalize_request), so the
    try is neither counted nor retried (measured, README "lab lint")."""
    cost = _cost(group, failure)
    return cost > 0 and cost >= group.client_timeout_s


@dataclass(frozen=True)
class _Counting:
    """How the scenario's requests to a backend that failed one way add to its failure count."""

    counted_rate: float      # req/s to it whose tries end in a counted failure
    cost: float              # the longest of those tries (the count lags its tries by it)
    abandoned_rate: float    # req/s to it whose clients give up first (499: nothing counted)


def _counting(group: _Group, failure: _Failure) -> _Counting:
    counted = abandoned = cost = 0.0
    for upstream, rate, timeout in group.siblings:
        here = rate * group.share
        c = failed_attempt_cost(upstream, failure.mode)
        if c > 0 and c >= timeout:
            abandoned += here
        elif here > 0:
            counted, cost = counted + here, max(cost, c)
    return _Counting(counted, cost, abandoned)


def _never_ejected(group: _Group, failure: _Failure) -> str | None:
    """Why a backend that failed this way is never ejected, if it is not.

    ngx_http_upstream_free_round_robin_peer: a counted failure stamps the server (accessed,
    checked); a try that ends without one (a success, or a 499 whose client gave up) resets the
    count when a selection more than fail_timeout after the stamp has moved ``checked``. A
    backend that stays down is never reset by a success, so its failures add up across
    fail_timeout windows, unless tries its clients gave up on come in between."""
    up = group.upstream
    if up.max_fails == 0:
        return "max_fails=0"
    if not group.several:
        return "a single server is never ejected"
    counting = _counting(group, failure)
    if group.pool_rate_per_s <= 0:
        return ("its tries end when their clients give up, uncounted"
                if _abandoned(group, failure) else None)
    if counting.counted_rate <= 0:
        return ("none of the scenario's tries on it is counted, each ending when its client "
                "gives up")
    gap = 1 / counting.counted_rate
    if counting.abandoned_rate > 0 and gap > up.fail_timeout_s:
        return (f"its counted failures come {gap:.3g} s apart, more than fail_timeout "
                f"{text_seconds(up.fail_timeout_s)}, and a try whose client gave up in between "
                f"resets the count, so max_fails {up.max_fails} may never be reached")
    return None


# A killed backend's address lingers in NGINX's neighbour table for a while; once the kernel
# gives up on it, connects fail at once with "no route to host", an error NGINX counts.
_ADDRESS_EXPIRES = ("until the kernel gives up on the vanished address: connects then fail at "
                    "once with \"no route to host\", an error NGINX counts (measured: from 41 s "
                    "after a kill in one run, not within 45 s in another); or at once, if a try "
                    "lands in the 45 ms or so after the kill while the dead backend's kernel "
                    "still refuses connects (docs/semantics.md §5)")


def _not_ejected(failure: _Failure, reason: str) -> str:
    """``never ejected (reason)``; for a killed backend whose tries go uncounted, only until
    its address expires."""
    if failure is KILLED and reason not in ("max_fails=0", "a single server is never ejected"):
        return f"not ejected ({reason}) {_ADDRESS_EXPIRES}"
    return f"never ejected ({reason})"


def _no_retry(group: _Group, failure: _Failure) -> str | None:
    """Why NGINX answers a failed try to the client instead of trying another backend (None:
    it retries). The order is ngx_http_upstream_next_upstream's."""
    up, cost = group.upstream, _cost(group, failure)
    if failure.condition not in up.next_upstream:
        listed = " ".join(up.next_upstream) or "off"
        return f"proxy_next_upstream {listed} lacks {failure.condition}"
    if up.next_upstream_tries == 1:
        return "proxy_next_upstream_tries 1"
    if not group.several:
        return "no other server"
    if up.next_upstream_timeout_s and up.next_upstream_timeout_s <= cost:
        return (f"proxy_next_upstream_timeout {text_seconds(up.next_upstream_timeout_s)} has "
                f"passed after one try of {text_seconds(cost)}")
    return None


def _wait(group: _Group, failure: _Failure) -> str:
    cost = _cost(group, failure)
    return f"after {failure.timeout} {text_seconds(cost)}" if cost else "at once"


def _meets(group: _Group, failure: _Failure) -> str:
    """What one request routed to a backend that failed this way gets."""
    if _abandoned(group, failure):
        return (f"waits until its client gives up at {text_seconds(group.client_timeout_s)}, "
                f"before {failure.timeout} {text_seconds(_cost(group, failure))} ends (NGINX "
                "logs 499 and counts nothing)")
    reason = _no_retry(group, failure)
    if reason is None:
        return f"is retried on the next backend {_wait(group, failure)}"
    return f"gets {failure.status} {_wait(group, failure)} (no retry: {reason})"


def _until(group: _Group, failure: _Failure) -> str:
    """How long that goes on: until an ejection, only where NGINX counts the failures."""
    reason = _never_ejected(group, failure)
    if reason is not None:
        see = ("; see failures-not-counted" if _abandoned(group, failure)
               or _counting(group, failure).abandoned_rate > 0 else "")
        return f"while it is down: {_not_ejected(failure, reason + see)}"
    if _abandoned(group, failure):
        return (f"until {group.counted_text} failures counted from other locations' tries "
                "eject it")
    return f"until {group.counted_text} such failures eject it"


def _ejected_after(group: _Group, failure: _Failure) -> tuple[int, float] | None:
    """(requests routed to the failed backend before NGINX ejects it, seconds until then) at
    the scenario's rate; None when it is never ejected or nothing is sent.

    One backend is offered a request every g = 1 / rate; a counted try fails c after it began,
    so the count reaches M at c + (M - 1) / counted rate, and with every try counted, M +
    floor(c / g) requests have gone to it by then (measured: max_fails=100 fail_timeout=1s at
    6.67 req/s per backend, 1 s connect, ejected it 15.85 s after the kill = 1 + 99 / 6.67)."""
    rate = group.backend_rate
    if rate <= 0 or _never_ejected(group, failure) is not None:
        return None
    counting = _counting(group, failure)
    at = counting.cost + (group.counted - 1) / counting.counted_rate
    return math.floor(at * rate + 1e-9) + 1, at


def _ejection_sum(group: _Group, failure: _Failure) -> str:
    """The arithmetic of ``_ejected_after``, with the numbers."""
    requests, at = _ejected_after(group, failure) or (0, 0.0)
    counting, rate = _counting(group, failure), group.backend_rate
    if math.isclose(counting.counted_rate, rate):
        lag = f" + {text_seconds(counting.cost)} x {rate:.3g} req/s" if counting.cost else ""
        return (f"{group.counted_text}{lag} = {requests} requests in the {at:.3g} s before "
                "NGINX ejects it")
    return (f"the count grows only with the {counting.counted_rate:.3g} req/s of it whose tries "
            f"end before their clients give up: {text_seconds(counting.cost)} + "
            f"({group.counted} - 1) / {counting.counted_rate:.3g} = {at:.3g} s before NGINX "
            f"ejects it, by when {requests} requests have gone to it")


def _client_errors(group: _Group, failures: Sequence[_Failure]) -> str:
    """Per failure mode, the client errors NGINX gives before it ejects the backend."""
    up = group.upstream
    parts = []
    for failure in failures:
        head = f"{failure.how}: "
        if _abandoned(group, failure):
            parts.append(f"{head}each request routed to it {_meets(group, failure)}, "
                         f"{_until(group, failure)}")
            continue
        answer = f"every request routed to it gets {failure.status} {_wait(group, failure)}"
        after = _ejected_after(group, failure)
        if after is None:
            parts.append(f"{head}{answer}, {_until(group, failure)}")
            continue
        requests, _ = after
        share = group.rate_per_s / group.pool_rate_per_s
        theirs = ("" if math.isclose(share, 1.0) else
                  f"; {requests * share:.3g} of them through these locations "
                  f"({group.rate_per_s:g} of {group.pool_rate_per_s:g} req/s)" if share else
                  "; the scenario sends none through these locations, whose requests fail "
                  "alike")
        probe = up.fail_timeout_s + _cost(group, failure)
        parts.append(
            f"{head}{answer}: {_ejection_sum(group, failure)}{theirs}; then one more every "
            f"{probe:g}-{probe + 1:g} s (fail_timeout lets a probe through; NGINX keeps whole "
            "seconds) while it stays down")
    return "; ".join(parts)


# -- NGINX: ejection and re-admission -------------------------------------------------------


def _main_group(lint: LintInput) -> _Group | None:
    """The group of the pool's "/" settings (what the traffic's "/" meets)."""
    groups = _groups(lint)
    upstream = _upstream(lint)
    return next((g for g in groups if any(r.upstream == upstream for r in g.routes)),
                groups[0] if groups else None)


@rule("no-ejection", "max_fails=0 (or one server): a failed backend is never taken out",
      _EJECTION | {AVAILABILITY, LATENCY})
def _no_ejection(lint: LintInput) -> list[Finding]:
    upstream = _upstream(lint)
    group = _main_group(lint)
    if upstream is None or group is None:
        return []
    n = len(upstream.servers)
    if upstream.max_fails == 0:
        each = "; ".join(f"{f.how}: each {_meets(group, f)}" for f in (KILLED, FROZEN))
        return [Finding(
            "no-ejection", Level.ERROR, _upstream_where(lint, upstream),
            f"upstream {upstream.name}: max_fails=0 disables failure counting",
            f"a dead backend stays in rotation: {group.share_text} requests goes to it for as "
            f"long as it is down ({group.backend_rate:.3g} req/s at scenario {group.scenario}'s "
            f"rate); {each}",
            "max_fails=3 fail_timeout=10s on each server")]
    if n == 1 and not upstream.backup_servers:
        return [Finding(
            "no-ejection", Level.WARNING, _upstream_where(lint, upstream),
            f"upstream {upstream.name} has 1 server: NGINX never marks a single server down",
            "when it fails every request fails; there is nothing to fail over to",
            "run two or more backends (or a backup server)")]
    return []


@rule("readmission-window", "fail_timeout longer than the readmission objective allows",
      frozenset({READMISSION}))
def _readmission(lint: LintInput) -> list[Finding]:
    upstream = _upstream(lint)
    if upstream is None or upstream.max_fails == 0:
        return []
    objective = lint.objectives.readmission
    worst = upstream.fail_timeout_s + 1
    if worst <= objective:
        return []
    return [Finding(
        "readmission-window", Level.ERROR, _upstream_where(lint, upstream),
        f"re-admission >= fail_timeout {text_seconds(upstream.fail_timeout_s)} + 1 s (NGINX "
        f"keeps failure times in whole seconds) = {text_seconds(worst)} > objective readmission "
        f"{text_seconds(objective)}",
        "a backend that was ejected and is back is sent no request until fail_timeout has "
        "passed since its last failure (open-source NGINX has no active check to notice "
        "sooner); measured: fail_timeout 10 s gave re-admission 9.6-11 s after the heal",
        f"fail_timeout={max(1, int(objective) - 2)}s or less, or relax the readmission "
        "objective")]


@rule("failing-latency", "connect/read timeouts longer than the failing-latency objective",
      frozenset({LATENCY}))
def _failing_latency(lint: LintInput) -> list[Finding]:
    objective = lint.objectives.failing_latency
    items = []
    for group in _groups(lint):
        for failure, value, how in (
                (KILLED, group.upstream.connect_timeout_s, "killed or cut off (no answer to SYN)"),
                (FROZEN, group.upstream.read_timeout_s, "frozen (handshake done, no answer)")):
            if value < objective:
                continue
            if _abandoned(group, failure):
                what = (f"waits until its client gives up at "
                        f"{text_seconds(group.client_timeout_s)} ({group.timeout_source}): no "
                        f"answer, no retry, no failure counted; this goes on "
                        f"{_until(group, failure)}")
            elif (reason := _no_retry(group, failure)) is None:
                what = (f"waits {text_seconds(value)} before its retry on the next backend, "
                        f"{_until(group, failure)}: those clients see the whole timeout")
            else:
                what = (f"waits {text_seconds(value)} and then gets {failure.status} (no retry: "
                        f"{reason}), {_until(group, failure)}")
            items.append((
                group,
                (f"{failure.timeout} {text_seconds(value)} "
                f"{_setting(lint, group.where, failure.timeout)} >= objective failing_latency "
                f"{text_seconds(objective)} (p99 while a backend fails)"),
                f"every request NGINX routes to a backend that is {how} {what}"
                + ("; NGINX's default is 60 s" if value == 60 else ""),
                (f"{failure.timeout} {max(1, int(objective / 2))}s (measured: 1 s connect, 5 s "
                "read keep a failover's p99 near 1 s)")))
    return _merged("failing-latency", Level.ERROR, items)


@rule("failures-not-counted", "a connect/read timeout the clients do not wait for: NGINX never "
      "counts the failure, so it never ejects the backend",
      _EJECTION | {AVAILABILITY, LATENCY})
def _not_counted(lint: LintInput) -> list[Finding]:
    items = []
    for group in _groups(lint):
        if group.upstream.max_fails == 0 or not group.several:
            continue             # no-ejection says it: nothing is ever ejected there
        lost = [f for f in (KILLED, FROZEN) if _abandoned(group, f)]
        if not lost:
            continue
        up, timeout = group.upstream, group.client_timeout_s
        settings = ", ".join(f"{f.timeout} {text_seconds(_cost(group, f))} "
                             f"{_setting(lint, group.where, f.timeout)}" for f in lost)
        rate = group.rate_per_s * group.share
        per = (f" ({rate:.3g} req/s at this rate, {rate * 60:.0f} a minute)" if rate > 0 else "")
        never = (f"max_fails {up.max_fails} is" if up.max_fails == 1
                 else f"max_fails {up.max_fails}, or even 1, is")
        ejected: dict[str, list[str]] = {}
        for f in lost:
            reason = _never_ejected(group, f)
            text = (_not_ejected(f, reason) if reason is not None else
                    "ejected only by the failures counted from other locations' tries: "
                    + _ejection_sum(group, f))
            ejected.setdefault(text, []).append(f.how)
        items.append((
            group,
            (f"{settings} >= the clients' timeout {text_seconds(timeout)} "
            f"({group.timeout_source})"),
            f"a request through these locations routed to a backend that is "
            f"{' or '.join(f.how for f in lost)} is still waiting when its client gives up at "
            f"{text_seconds(timeout)}: NGINX logs 499 and frees the server without counting a "
            f"failure ({never} never reached by these tries) and makes no retry: "
            f"{group.share_text} of their requests{per} waits {text_seconds(timeout)} and "
            "fails; " + "; ".join(f"{' or '.join(hows)}: {text}"
                                  for text, hows in ejected.items())
            + ". Measured at 20 req/s with clients that give up "
            "at 10 s: a killed backend with proxy_connect_timeout 60s and a frozen one with "
            "proxy_read_timeout 60s (max_fails=1): every try on it that ended during the fault "
            "was a 499 at 10.0 s (231 of 231; 197 of 197), none counted, and it kept its third "
            "of the traffic through the whole fault (45 s; 40 s)",
            (f"{' and '.join(f.timeout for f in lost)} well below the clients' "
            f"{text_seconds(timeout)}: a connect takes a millisecond on a LAN (proxy_connect_"
            "timeout 1s), a read as long as the slowest healthy answer (the lab's default "
            "proxy_read_timeout is 5s)")))
    return _merged("failures-not-counted", Level.ERROR, items)


@rule("ejection-window", "max_fails reached later than the ejection objective at the "
      "scenario's rate, or an ejection shorter than one turn", frozenset({EJECTION}))
def _ejection_window(lint: LintInput) -> list[Finding]:
    objective = lint.objectives.ejection
    groups = _groups(lint)
    if not groups:
        return []
    # Failure counts belong to the server: any group's view of them is the pool's.
    group = groups[0]
    up, rate = group.upstream, group.backend_rate
    if rate <= 0 or up.max_fails == 0 or not group.several:
        return []
    out = []
    late = [(f, after) for f in FAILURES
            if (after := _ejected_after(group, f)) is not None and after[1] > objective]
    if late:
        cost = min(_counting(group, f).cost for f, _ in late)
        counted = min(_counting(group, f).counted_rate for f, _ in late)
        fits = max(1, math.floor((objective - cost) * counted) + 1)
        workers = 1 if up.shared_counters else up.worker_processes
        out.append(Finding(
            "ejection-window", Level.ERROR, _upstream_where(lint, up),
            f"upstream {up.name}: {group.traffic_text()}; "
            + "; ".join(f"{f.how}: {_ejection_sum(group, f)}" for f, _ in late)
            + f"; > objective ejection {text_seconds(objective)}",
            "each request routed to the failed backend meanwhile "
            + "; ".join(f"{f.how}: {_meets(group, f)}" for f, _ in late)
            + ". NGINX resets the count only when a try ends without failing, so the failures of "
            "a backend that stays down add up across fail_timeout windows and max_fails is "
            "reached, only late (measured: max_fails=100 fail_timeout=1s at 6.67 req/s per "
            "backend with a 1 s connect timeout: last try 15.85 s after the kill, as "
            "1 + 99 / 6.67 predicts)",
            f"max_fails={max(1, fits // workers)} or less at this rate, or relax the ejection "
            "objective"))
    gap = 1 / rate
    if gap > up.fail_timeout_s + 1:
        out.append(Finding(
            "ejection-window", Level.ERROR, _upstream_where(lint, up),
            f"upstream {up.name}: {group.traffic_text()}: a backend is offered a request every "
            f"{gap:.3g} s > fail_timeout {text_seconds(up.fail_timeout_s)} + 1 s (NGINX keeps "
            "whole seconds)",
            "an ejected backend is let back in before its next turn comes: ejection makes it "
            "miss no request, and each request routed to it "
            + "; ".join(f"{f.how}: {_meets(group, f)}" for f in (KILLED, FROZEN)),
            f"fail_timeout={math.ceil(gap) + 10}s (several turns), or judge at a higher rate"))
    return out


@rule("per-worker-counters", "failure counters per worker process (no shared zone)",
      _EJECTION)
def _per_worker(lint: LintInput) -> list[Finding]:
    upstream = _upstream(lint)
    if upstream is None or upstream.shared_counters or upstream.max_fails == 0:
        return []
    w = upstream.worker_processes
    return [Finding(
        "per-worker-counters", Level.WARNING, _upstream_where(lint, upstream),
        f"worker_processes {w}, no zone in upstream {upstream.name}: each worker counts "
        f"failures alone; ejection takes up to {w} x max_fails {upstream.max_fails} = "
        f"{w * upstream.max_fails} counted failures, and each worker ejects at its own time",
        "the ejection window depends on which worker a connection lands on; "
        "`worker_processes auto` makes it depend on the machine's cores",
        f"add `zone {upstream.name} 64k;` to the upstream block")]


@rule("health-503-ejects", "http_503 retried while dependency health endpoints are proxied",
      frozenset({AVAILABILITY, EJECTION, HEALTH_CONTRACT, DETAILED_TIMING}))
def _health_503(lint: LintInput) -> list[Finding]:
    upstream = _upstream(lint)
    if upstream is None or upstream.max_fails == 0:
        return []
    try:
        nginx = lint.expectations.nginx
    except ExpectationUnavailable:
        return []
    out = []
    for path in dict.fromkeys((lint.health.detailed, lint.health.ready)):
        found = route(lint.tree, path)
        if found is None or found.upstream is None or "http_503" not in found.next_upstream:
            continue
        at = _location_of(nginx, path)
        policy = at.upstream if at is not None and at.upstream is not None else upstream
        n = len(policy.servers)
        tries = policy.next_upstream_tries or n
        if n < 2 or tries < 2:
            continue             # a 503 counts only when another try remains: none does
        counted = min(tries, n) - 1
        out.append(Finding(
            "health-503-ejects", Level.ERROR, found.where,
            f"{path} is proxied (location {found.location}) with proxy_next_upstream "
            f"{' '.join(found.next_upstream)}: a dependency outage makes all {n} backends answer "
            f"503 there; each request tries {min(tries, n)} of them and counts a failure against "
            f"each but the last (NGINX counts a listed status only when another try remains), so "
            f"about max_fails {policy.max_fails} x ({n} - 1) / {counted} = "
            f"{math.ceil(policy.max_fails * (n - 1) / counted)} such request(s) eject {n - 1} of "
            f"them for fail_timeout {text_seconds(policy.fail_timeout_s)}; the next request's "
            "503 from the last one is counted too, with no live backend left to try",
            "a Redis or database outage takes the whole site down: every request gets 502 "
            "(no live upstreams) until fail_timeout passes (measured: 3 requests to "
            "/health/detailed during a Redis outage ejected two of three backends; the fourth "
            "got 502)",
            f"probe dependency health per backend, not through NGINX; or give {path} a "
            "location with `proxy_next_upstream error timeout;`"))
        break
    return out


# -- NGINX: retries ---------------------------------------------------------------------------


_RETRY_FIX = ("proxy_next_upstream error timeout; (add http_502 http_503 http_504 to retry those "
              "answers too) at that location or its server")


@rule("no-retry", "proxy_next_upstream without error or timeout (or off): a failed backend's "
      "requests reach the clients as errors", frozenset({AVAILABILITY, EJECTION}))
def _no_retry_rule(lint: LintInput) -> list[Finding]:
    items = []
    for group in _groups(lint):
        up = group.upstream
        missing = [c for c in ("error", "timeout") if c not in up.next_upstream]
        if not missing or not group.several:
            continue
        listed = " ".join(up.next_upstream) or "off"
        items.append((
            group,
            (f"proxy_next_upstream {listed} "
            f"{_setting(lint, group.where, 'proxy_next_upstream')} lacks "
            f"{' and '.join(missing)}: a try that fails that way is answered to the client, "
            f"never retried on another backend. {group.traffic_text()}"),
            _client_errors(group, [f for f in FAILURES if f.condition in missing]),
            _RETRY_FIX))
    return _merged("no-retry", Level.ERROR, items)


@rule("single-try", "proxy_next_upstream_tries 1: no request is ever retried",
      frozenset({AVAILABILITY, EJECTION}))
def _single_try(lint: LintInput) -> list[Finding]:
    items = []
    for group in _groups(lint):
        up = group.upstream
        retried = [f for f in FAILURES if f.condition in up.next_upstream]
        if up.next_upstream_tries != 1 or not retried or not group.several:
            continue
        items.append((
            group,
            ("proxy_next_upstream_tries 1 "
            f"{_setting(lint, group.where, 'proxy_next_upstream_tries')}: one try per request, "
            f"whatever proxy_next_upstream ({' '.join(up.next_upstream)}) lists. "
            f"{group.traffic_text()}"),
            _client_errors(group, retried),
            "proxy_next_upstream_tries 0 (as many tries as servers) or 2 and more"))
    return _merged("single-try", Level.ERROR, items)


@rule("retry-timeout-too-short", "proxy_next_upstream_timeout no longer than one failed try: "
      "the retry is never made", frozenset({AVAILABILITY, EJECTION, LATENCY}))
def _retry_timeout(lint: LintInput) -> list[Finding]:
    items = []
    for group in _groups(lint):
        up = group.upstream
        limit = up.next_upstream_timeout_s
        cut = [f for f in (KILLED, FROZEN) if limit and f.condition in up.next_upstream
               and up.next_upstream_tries != 1 and group.several
               and not _abandoned(group, f) and limit <= _cost(group, f)]
        if not cut:
            continue
        items.append((
            group,
            f"proxy_next_upstream_timeout {text_seconds(limit)} "
            f"{_setting(lint, group.where, 'proxy_next_upstream_timeout')} <= "
            + " and ".join(f"{f.timeout} {text_seconds(_cost(group, f))} ({f.how})" for f in cut)
            + ": NGINX makes no further try once proxy_next_upstream_timeout has passed since "
            f"the first began, and one failed try already takes that long. "
            f"{group.traffic_text()}",
            _client_errors(group, cut),
            ("proxy_next_upstream_timeout 0 (no limit), or longer than "
            f"{text_seconds(max(_cost(group, f) for f in cut))} plus a normal answer")))
    return _merged("retry-timeout-too-short", Level.ERROR, items)


@rule("retried-writes", "non_idempotent in proxy_next_upstream while the traffic writes: a "
      "write already sent is sent again (duplicates)", frozenset({DURABILITY}))
def _retried_writes(lint: LintInput) -> list[Finding]:
    items = []
    for group in _groups(lint):
        up = group.upstream
        writes = [s for s in group.streams if s.method.upper() in NON_IDEMPOTENT]
        if "non_idempotent" not in up.next_upstream or not writes or not group.several:
            continue
        rate = sum(s.rate_per_s for s in writes)
        per_backend = rate * group.share
        after = _ejected_after(group, FROZEN)
        during = (f" About {per_backend:.3g} writes/s x {after[1]:.3g} s = "
                  f"{per_backend * after[1]:.3g} writes are sent twice while a frozen backend "
                  "is being ejected (proxy_read_timeout, then the count reaching "
                  f"{group.counted_text})." if after is not None and per_backend > 0 else "")
        items.append((
            group,
            f"proxy_next_upstream {' '.join(up.next_upstream)} "
            f"{_setting(lint, group.where, 'proxy_next_upstream')} lists non_idempotent, and "
            f"scenario {group.scenario} writes {rate:g} req/s there ("
            + ", ".join(f"{s.client}: {s.method} {s.path}" for s in writes) + ")",
            "a POST or PATCH already sent to a backend that then fails (no answer within "
            f"proxy_read_timeout {text_seconds(up.read_timeout_s)}; a listed 5xx) is sent again "
            "to the next backend while the first may still store it (a frozen backend resumes "
            "and commits; a slow one already has): the same write twice." + during
            + " Without non_idempotent NGINX answers such a write 504 and sends it nowhere else "
            "(measured: 7 of ~100 writes to a frozen backend got 504)",
            ("remove non_idempotent, or make each write idempotent (a request id the backend "
            "stores once) before retrying it")))
    return _merged("retried-writes", Level.WARNING, items)


# -- NGINX: connections and timeouts the backends need ---------------------------------------


@rule("keepalive-unused", "upstream keepalive without proxy_http_version 1.1 and an empty "
      "Connection header: the cache keeps nothing", frozenset({LATENCY}))
def _keepalive(lint: LintInput) -> list[Finding]:
    items = []
    for group in _groups(lint):
        up = group.upstream
        header = (up.connection_header or "").strip()
        closes = up.connection_header is None or header.lower() == "close"
        if not up.keepalive or (up.http_version == "1.1" and not closes):
            continue
        keepalive = _find(lint.tree, "upstream", up.name)
        line = next((d.where for d in (keepalive.block or ()) if d.name == "keepalive"),
                    "") if keepalive is not None else ""
        sent = []
        if up.http_version != "1.1":
            sent.append(f"proxy_http_version {up.http_version} "
                        f"{_setting(lint, group.where, 'proxy_http_version')}")
        if closes:
            sent.append("Connection: close (NGINX's default: no proxy_set_header Connection \"\" "
                        "in force)" if up.connection_header is None
                        else f"proxy_set_header Connection {up.connection_header!r}")
        rate = group.pool_rate_per_s
        items.append((
            group,
            "sends " + " and ".join(sent) + f", while upstream {up.name} has keepalive "
            f"{up.keepalive}" + (f" ({line})" if line else ""),
            "NGINX asks the backend to close each connection after its answer, and the "
            "keepalive cache takes a connection only when the answer allowed keep-alive "
            "(ngx_http_upstream_keepalive_module): it stays empty, and every request opens a "
            "new TCP connection to its backend"
            + (f" ({rate:g} connects/s to the pool at scenario {group.scenario}'s rate)"
               if rate else "")
            + ", as if there were no keepalive line",
            ("proxy_http_version 1.1; and proxy_set_header Connection \"\"; at that location or "
            "its server (proxy_set_header at a level replaces every inherited one: repeat "
            "Host, X-Forwarded-For and the others there)")))
    return _merged("keepalive-unused", Level.WARNING, items)


def _needs(lint: LintInput) -> tuple[float, str] | None:
    """The slowest answer a healthy backend gives, and where that figure comes from."""
    given = lint.assumptions.backend_latency_s
    if given is not None:
        return given, "--backend-latency (the slowest healthy answer at this rate)"
    if lint.config.backend.contract is not None:
        return None              # a backend of yours: its latency is yours to state
    try:
        budget = lint.expectations.backend.db_budget_s
    except ExpectationUnavailable:
        return None
    return budget, ("the backend's database budget: a healthy backend waits up to "
                    "clamp(2 x LAB_DEPENDENCY_TIMEOUT_S, 1 s, 2 s) for its database before it "
                    "answers (images/backend/README.md)")


@rule("timeout-below-backend-latency", "a connect/read timeout a healthy, loaded backend can "
      "exceed: healthy backends are counted as failed and ejected",
      frozenset({AVAILABILITY, DISTRIBUTION, EJECTION}))
def _below_latency(lint: LintInput) -> list[Finding]:
    needs = _needs(lint)
    items = []
    for group in _groups(lint):
        up = group.upstream
        short = []
        if up.connect_timeout_s < SYN_RETRANSMIT_S:
            short.append((
                (f"proxy_connect_timeout {text_seconds(up.connect_timeout_s)} "
                 f"{_setting(lint, group.where, 'proxy_connect_timeout')} < "
                 f"{text_seconds(SYN_RETRANSMIT_S)}, when Linux resends an unanswered SYN (its "
                 "initial retransmission timeout): a SYN dropped once (a full listen backlog "
                 "under load, one lost packet) fails the connect"), "proxy_connect_timeout 1s"))
        if needs is not None and up.read_timeout_s < needs[0]:
            short.append((
                (f"proxy_read_timeout {text_seconds(up.read_timeout_s)} "
                 f"{_setting(lint, group.where, 'proxy_read_timeout')} < "
                 f"{text_seconds(needs[0])}, {needs[1]}"),
                f"proxy_read_timeout {math.ceil(needs[0] * 2)}s"))
        if not short or up.max_fails == 0 or not group.several:
            continue
        rate, window = group.backend_rate, up.fail_timeout_s
        many = (f": at {rate:.3g} req/s per backend that is {group.counted} of the "
                f"{rate * window:.0f} requests it gets in fail_timeout "
                f"{text_seconds(window)}, {group.counted / (rate * window):.1%}"
                if rate * window > group.counted else "")
        items.append((
            group,
            "; ".join(text for text, _ in short),
            ("a healthy backend that misses that timeout is counted as failed, and "
            f"{group.counted_text} such answers close together eject it{many}. Its GETs are "
            "retried on the others, which adds to their load; when the slowness is shared (the "
            "database, a load peak) every backend is ejected and NGINX answers 502 \"no live "
            "upstreams\" (measured: the stress profile, to 3,000 req/s: 28,708 answers 502 once "
            "read timeouts had ejected every backend)"),
            " and ".join(fix for _, fix in short)
            + " (or state the healthy latency you measured: lab lint --backend-latency)"))
    return _merged("timeout-below-backend-latency", Level.WARNING, items)


# -- NGINX: rate limits ---------------------------------------------------------------------


@rule("limit-req-no-burst", "limit_req without burst rejects concurrent clients behind one address",
      frozenset({RATE_LIMIT}))
def _no_burst(lint: LintInput) -> list[Finding]:
    try:
        rules = lint.expectations.nginx.rate_limits
    except ExpectationUnavailable:
        return []
    out = []
    seen = set()
    for r in rules:
        if r.burst or r.zone in seen:
            continue
        seen.add(r.zone)
        gap_ms = 1000 / r.rate_per_s
        directive = _find(lint.tree, "limit_req", f"zone={r.zone}")
        out.append(Finding(
            "limit-req-no-burst", Level.WARNING,
            directive.where if directive else lint.nginx_source,
            f"zone {r.zone} ({r.rate_per_s:g} r/s, burst 0) at {r.location}: a request less "
            f"than 1000 / {r.rate_per_s:g} = {gap_ms:g} ms after the previous one from the "
            "same address finds the bucket at excess 1 > burst 0 and is rejected",
            "clients behind one address (a NAT, an office, a mobile carrier, a server-side "
            "caller) are rejected whenever two of their requests land within "
            f"{gap_ms:g} ms, far below the rate (measured: 2,930 of 3,000 requests rejected at "
            "16 concurrent against 100 r/s)",
            f"limit_req zone={r.zone} burst={max(5, int(r.rate_per_s // 5))} nodelay;"))
    return out


@rule("shared-limit-key", "a limit_req zone keyed on something every client shares",
      frozenset({RATE_LIMIT}))
def _shared_key(lint: LintInput) -> list[Finding]:
    out = []
    for d in walk(lint.tree):
        if d.name != "limit_req_zone" or not d.args:
            continue
        key = d.args[0]
        if any(k in key for k in CLIENT_KEYS):
            continue
        zone = next((a.split("=", 1)[1].split(":")[0] for a in d.args if a.startswith("zone=")),
                    "?")
        out.append(Finding(
            "shared-limit-key", Level.ERROR, d.where,
            f"zone {zone} is keyed on {key!r}, which names no client: every client shares "
            "one bucket",
            "the limit applies to all clients together: one busy client uses up everyone's "
            "allowance (measured: after the host's burst of 8 logins, a second client 50 ms "
            "later got 0 of 8 where its own allowance gives 6)",
            f"limit_req_zone $binary_remote_addr zone={zone}:10m rate=...;"))
    return out


# -- NGINX: what open-source NGINX cannot do -------------------------------------------------


def _check_numbers(d: Directive) -> dict[str, int]:
    out = {}
    for arg in d.args:
        key, _, value = arg.partition("=")
        if value.isdigit():
            out[key] = int(value)
    return out


@rule("active-health-checks", "claims open-source NGINX cannot meet (active checks, check_status)",
      _EJECTION)
def _active_checks(lint: LintInput) -> list[Finding]:
    upstream = _upstream(lint)
    out = []
    others: list[Directive] = []
    for d in walk(lint.tree):
        if d.name not in UNPROVIDABLE:
            continue
        if d.name == "check":
            n = _check_numbers(d)
            interval = n.get("interval", 30000) / 1000
            fall, rise = n.get("fall", 5), n.get("rise", 2)
            claim = (f"`check interval={n.get('interval', 30000)} rise={rise} fall={fall}` "
                     f"claims a dead backend out within fall x interval = {fall} x "
                     f"{interval:g} s = {fall * interval:g} s and back within rise x interval = "
                     f"{rise * interval:g} s")
            passive = ""
            group = _main_group(lint)
            if upstream is not None and upstream.max_fails == 0:
                passive = "; what runs instead takes no dead backend out: max_fails=0"
            elif upstream is not None and group is not None and _abandoned(group, KILLED):
                passive = (f"; what runs instead is passive, and with proxy_connect_timeout "
                           f"{text_seconds(upstream.connect_timeout_s)} >= the clients' "
                           f"{text_seconds(group.client_timeout_s)} a killed backend's failures "
                           "are not counted: it is not taken out "
                           f"{_ADDRESS_EXPIRES} (failures-not-counted)")
            elif upstream is not None and group is not None:
                passive = (f"; what runs instead is passive: out after {group.counted_text} "
                           f"failed client requests (when killed, each {_meets(group, KILLED)}), "
                           f"back fail_timeout {text_seconds(upstream.fail_timeout_s)} + 1 s "
                           "after the last failure")
            out.append(Finding(
                "active-health-checks", Level.ERROR, d.where,
                claim + passive,
                "open-source NGINX refuses the directive (`nginx -t`: unknown directive "
                "\"check\"); no Debian package (nginx, nginx-full) has the third-party "
                "nginx_upstream_check_module: NGINX finds a dead backend only by failing "
                "client requests, so clients pay for every detection",
                "remove the check lines and judge failover by max_fails/fail_timeout (`lab run "
                "failover`), or put HAProxy (`check inter 10s rise 2 fall 5`) in front"))
        else:
            others.append(d)
    by_reason: dict[str, list[Directive]] = {}
    for d in others:
        by_reason.setdefault(UNPROVIDABLE[d.name], []).append(d)
    for reason, found in by_reason.items():
        listed = ", ".join(f"{d.name} ({d.where})" for d in found)
        out.append(Finding(
            "active-health-checks", Level.ERROR, found[0].where, f"{listed}: {reason}",
            "NGINX refuses to start with these lines; what they claim (health probes, a status "
            "page of backend health) does not run",
            "remove them (stub_status counts connections; it reports no backend health)"))
    return out


# -- PgBouncer and PostgreSQL ------------------------------------------------------------------


@rule("pool-exceeds-max-connections", "PgBouncer may open more server connections than "
      "PostgreSQL admits", frozenset({POOL_BOUND}))
def _pool(lint: LintInput) -> list[Finding]:
    try:
        pool, pg = lint.expectations.pgbouncer, lint.expectations.postgres
    except ExpectationUnavailable:
        return []
    admitted = pg.max_connections - SUPERUSER_RESERVED
    replicas = lint.config.backend.replicas
    where = lint.config.pgbouncer.ini or "lab.toml [pgbouncer] default_pool_size"
    if pool.server_bound <= admitted:
        return []
    return [Finding(
        "pool-exceeds-max-connections", Level.ERROR, where,
        f"default_pool_size {pool.default_pool_size} + reserve_pool_size "
        f"{pool.reserve_pool_size} = {pool.server_bound} server connections per (database, user) "
        f"pool > PostgreSQL max_connections {pg.max_connections} - {SUPERUSER_RESERVED} reserved "
        f"= {admitted}. The {replicas} backends share that one pool: their count does not "
        "multiply it, it only adds clients",
        "under load PgBouncer tries to open more server connections than PostgreSQL accepts: "
        "the extra logins fail with 'too many clients already', and after a failed login "
        "PgBouncer refuses new server logins for server_login_retry "
        f"({text_seconds(pool.server_login_retry_s)})",
        f"default_pool_size <= {admitted - pool.reserve_pool_size}, or raise PostgreSQL's "
        "max_connections")]


# -- locks ----------------------------------------------------------------------------------


@rule("lock-ttl-shorter-than-job", "a lock lease that expires mid-run and is never renewed",
      _LOCKS)
def _ttl(lint: LintInput) -> list[Finding]:
    try:
        backend = lint.expectations.backend
    except ExpectationUnavailable:
        return []
    if not backend.locking or backend.lock_renewal or backend.lock_ttl_s >= backend.job_duration_s:
        return []
    return [Finding(
        "lock-ttl-shorter-than-job", Level.ERROR, "lab.toml [backend]",
        f"lock_ttl {text_seconds(backend.lock_ttl_s)} < job_duration "
        f"{text_seconds(backend.job_duration_s)}, and the lease is never renewed",
        "the lock expires while the job still runs; the next tick's node takes it and starts "
        "a second run of the same job at the same time",
        f"renew the lease every TTL/3 while the job runs, or lock_ttl > "
        f"{text_seconds(backend.job_duration_s)} plus the longest pause you expect")]


@rule("redis-no-persistence", "job locks in a Redis that forgets them on restart",
      _LOCKS)
def _redis(lint: LintInput) -> list[Finding]:
    try:
        redis, backend = lint.expectations.redis, lint.expectations.backend
    except ExpectationUnavailable:
        return []
    if redis.persistence or not backend.locking:
        return []
    return [Finding(
        "redis-no-persistence", Level.WARNING, "lab.toml [redis] persistence",
        "persistence off (save \"\", appendonly no): a restart empties Redis, with every job "
        "lock and tick marker",
        "a holder keeps running its job after a Redis restart (a lost lease does not stop a "
        "process) while another node takes the empty lock at the next tick (measured: 1.5 s "
        "of overlap with a 3.5 s job); only fencing of the side effects contains it",
        "appendonly yes (appendfsync everysec), or fence every side effect with the lock's "
        "token")]


def run_rules(lint: LintInput) -> Iterator[Finding]:
    """Every registered rule's findings, in registration order."""
    for entry in RULES:
        yield from entry.check(lint)



