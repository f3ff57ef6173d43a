"""What the running configuration implies: the typed record every check derives its
expectations from.

One ``Expectations`` record is built once per run, before any traffic, either from what really
runs (``lab.topology.expect.running``: the nginx.conf NGINX serves, PgBouncer's ``SHOW
CONFIG``, the backends' environment, Redis's and PostgreSQL's own settings) or from a claimed
configuration (``lab.topology.expect.claimed``: what a checklist says), which is how negative
controls judge a deliberately broken topology against what it should have been. Checks read
only this record and the history; they never read ``lab.toml`` or ``topology/``.

A part that could not be read (PgBouncer down when the run starts, an ini that does not
parse) is kept as the error: the checks that need it report ``unknown`` with that error, and
the others still judge.

The rules behind the derived numbers are in docs/semantics.md, cited by section.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator

from lab.contract import REFERENCE_JOBS, REFERENCE_LOCK_PREFIX

# -- NGINX ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamServer:
    """One ``server`` line of an upstream group, with the parameters NGINX runs it with."""

    node: str                           # the backend node it maps to (or its address)
    address: str
    weight: int = 1
    max_fails: int = 1
    fail_timeout_s: float = 10.0
    backup: bool = False
    down: bool = False
    max_conns: int = 0                  # 0: no limit


@dataclass(frozen=True)
class UpstreamPolicy:
    """What a request proxied to the backend pool meets: the upstream group (its servers and
    their passive-check settings) and the proxy settings in force at the location that
    proxies it (timeouts, retries, keepalive)."""

    name: str
    servers: tuple[str, ...]            # node names (backend-1, ...) of the primary servers
    max_fails: int                      # the primary servers' (the first one's if they differ)
    fail_timeout_s: float
    connect_timeout_s: float
    read_timeout_s: float
    next_upstream: tuple[str, ...]      # () when "off"
    zone: bool
    worker_processes: int
    balancing: str                      # round_robin, least_conn, ip_hash, hash, random
    next_upstream_tries: int = 0        # 0: as many tries as live servers
    backup_servers: tuple[str, ...] = ()
    # Every server line (primary, backup and down), each with its own parameters; empty for a
    # policy built by hand, where the group's values above stand for every server.
    members: tuple[UpstreamServer, ...] = ()
    next_upstream_timeout_s: float = 0.0    # 0: retries are not limited in time
    location: str = "/"                 # the location whose settings these are
    keepalive: int = 0                  # idle connections cached per worker (0: none)
    http_version: str = "1.0"           # proxy_http_version
    connection_header: str | None = None    # proxy_set_header Connection (None: "close")
    hash_key: str = ""                  # the hash directive's key (balancing "hash")
    hash_consistent: bool = False       # "hash KEY consistent" (ketama) rather than modulo

    @property
    def shared_counters(self) -> bool:
        """Whether failure counts are global (a zone, or one worker) rather than per worker."""
        return self.zone or self.worker_processes == 1

    @property
    def counters(self) -> int:
        """How many separate failure counts a server has: one per worker without a zone."""
        return 1 if self.shared_counters else self.worker_processes

    @property
    def single(self) -> bool:
        """Whether the group is NGINX's "single" case: one primary server line (down ones
        count) and no backup. free_peer then counts no failure and ends the tries, so the
        server is never skipped and a failed try is never retried (round_robin.c, 1.22)."""
        primaries = ([m for m in self.members if not m.backup] if self.members
                     else list(self.servers))
        return len(primaries) == 1 and not self.backup_servers

    @property
    def ejects(self) -> bool:
        """Whether a failing server can be taken out of rotation at all (docs/semantics.md §1)."""
        return self.max_fails > 0 and not self.single

    def peer(self, node: str) -> UpstreamServer:
        """The server line of ``node`` (the group's values when the policy lists no members)."""
        for member in self.members:
            if member.node == node and not member.down:
                return member
        return UpstreamServer(node, node, 1, self.max_fails, self.fail_timeout_s,
                              node in self.backup_servers)

    @property
    def weights(self) -> dict[str, int]:
        """Primary server -> its weight (1 each when the policy lists no members)."""
        return {node: self.peer(node).weight for node in self.servers}

    @property
    def uniform(self) -> bool:
        """Whether every primary server has the same max_fails and fail_timeout."""
        return len({(self.peer(n).max_fails, self.peer(n).fail_timeout_s)
                    for n in self.servers}) <= 1


@dataclass(frozen=True)
class RateLimitRule:
    """One ``limit_req`` in force for a location, with its zone's rate resolved."""

    zone: str
    location: str
    rate_per_s: float                   # as nginx stores it: r/m is rate * 1000 // 60 milli
    burst: int
    nodelay: bool
    delay: int
    key: str = ""


@dataclass(frozen=True)
class ServerPolicy:
    """One ``server`` block: where it listens, which headers it adds, whether it redirects."""

    listen: tuple[str, ...]
    tls: bool
    server_names: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]     # add_header name/value in force at server level
    always_headers: tuple[str, ...]          # names of those added with "always"
    ports: tuple[int, ...] = ()              # the ports it listens on (80 when none is named)
    tls_ports: tuple[int, ...] = ()          # those of them with ``ssl``
    default_ports: tuple[int, ...] = ()      # ports where it is the ``default_server``
    # A redirect every plain-HTTP request to this server gets before any location (a
    # server-level ``return 301 https://...``, or one inside ``if ($scheme = http)``).
    http_redirect: str | None = None


@dataclass(frozen=True)
class LocationPolicy:
    """One location of one server block and where it sends a request."""

    server: int                      # index into NginxPolicy.servers
    modifier: str                    # "" (prefix), "=", "^~", "~", "~*", "@" (named)
    pattern: str
    upstream: UpstreamPolicy | None  # the upstream group it proxies to, with its settings
    proxied: str | None = None       # proxy_pass's host part (an upstream name, or host:port)
    redirect: str | None = None      # the target of a ``return 3xx URL`` answering it
    where: str = ""                  # file:line

    def matches(self, path: str) -> bool:
        """Whether a request path matches this location's own pattern (nginx's rules)."""
        if self.modifier == "@":
            return False
        if self.modifier == "=":
            return path == self.pattern
        if self.modifier in ("~", "~*"):
            flags = re.IGNORECASE if self.modifier == "~*" else 0
            try:
                return re.search(self.pattern, path, flags) is not None
            except re.error:
                return False
        return path.startswith(self.pattern)


@dataclass(frozen=True)
class NginxPolicy:
    """Everything the checks read from nginx.conf."""

    upstream: UpstreamPolicy             # the backend pool, as the traffic's "/" meets it
    rate_limits: tuple[RateLimitRule, ...]
    rate_limit_status: int
    servers: tuple[ServerPolicy, ...]
    locations: tuple[LocationPolicy, ...] = ()
    upstream_names: tuple[str, ...] = ()     # every upstream block, in file order

    def rate_limit_for(self, location: str) -> tuple[RateLimitRule, ...]:
        """The limit_req rules of one location prefix (empty when it is not limited)."""
        return tuple(rule for rule in self.rate_limits if rule.location == location)

    def server_for(self, port: int) -> int | None:
        """The index of the server block a request on ``port`` reaches (its default_server,
        else the first listening there; no Host header matching)."""
        listening = [i for i, s in enumerate(self.servers) if port in (s.ports or (80,))]
        default = [i for i in listening if port in self.servers[i].default_ports]
        return (default or listening or [None])[0]

    def site_ports(self) -> tuple[int | None, int | None]:
        """The ports the lab's clients use: (plain HTTP, TLS). 80 and 443 where a server
        listens there (a server without ``listen`` listens on 80); else the first port of a
        server whose locations proxy to an upstream group (a site behind a cloud load
        balancer on 3000 or 9999)."""
        def proxying(index: int) -> bool:
            return any(loc.server == index and loc.proxied for loc in self.locations)

        plain = [(p, i) for i, s in enumerate(self.servers) for p in (s.ports or (80,))
                 if p not in s.tls_ports]
        tls = [(p, i) for i, s in enumerate(self.servers) for p in s.tls_ports]

        def choose(found: list[tuple[int, int]], usual: int) -> int | None:
            if any(p == usual for p, _ in found):
                return usual
            return next((p for p, i in found if proxying(i)), None)

        return choose(plain, 80), choose(tls, 443)

    def _port(self, port: int | None) -> int:
        if port is not None:
            return port
        plain, tls = self.site_ports()
        return plain if plain is not None else tls if tls is not None else 80

    def location_for(self, path: str, port: int | None = None) -> LocationPolicy | None:
        """The location that answers ``path`` on ``port`` (default: the site's plain port, or
        its TLS port when it has none), by nginx's order: an exact match, else the longest
        prefix when it is ``^~``, else the first regex that matches, else the longest prefix
        (docs/semantics.md §1)."""
        server = self.server_for(self._port(port))
        if server is None:
            return None
        own = [loc for loc in self.locations if loc.server == server]
        exact = [loc for loc in own if loc.modifier == "=" and loc.matches(path)]
        if exact:
            return exact[0]
        prefixes = [loc for loc in own if loc.modifier in ("", "^~") and loc.matches(path)]
        longest = max(prefixes, key=lambda loc: len(loc.pattern), default=None)
        if longest is not None and longest.modifier == "^~":
            return longest
        regex = next((loc for loc in own if loc.modifier in ("~", "~*") and loc.matches(path)),
                     None)
        return regex or longest

    def redirects(self, path: str, port: int | None = None) -> str | None:
        """Where a plain request for ``path`` on ``port`` is redirected, if it is."""
        port = self._port(port)
        server = self.server_for(port)
        if server is None or port in self.servers[server].tls_ports:
            return None
        if self.servers[server].http_redirect:
            return self.servers[server].http_redirect
        location = self.location_for(path, port)
        return location.redirect if location is not None else None

    def https_port(self) -> int | None:
        """The port the site serves TLS on (443 first)."""
        return self.site_ports()[1]

    def client_port(self, path: str = "/") -> int | None:
        """The port a client ends up asking for ``path``: the site's plain port, or its TLS
        port when the plain one redirects to HTTPS or there is none."""
        plain, tls = self.site_ports()
        if plain is None or (self.redirects(path, plain) is not None and tls is not None):
            return tls
        return plain

    def upstream_for(self, path: str, port: int | None = None) -> UpstreamPolicy | None:
        """The upstream settings a request for ``path`` meets, following a redirect of plain
        HTTP to HTTPS as the lab's clients do; None when no upstream group answers it."""
        if port is None:
            port = self.client_port(path)
        elif self.redirects(path, port) is not None and (tls := self.https_port()) is not None:
            port = tls
        location = self.location_for(path, port)
        return location.upstream if location is not None else None


class FailureMode(StrEnum):
    """How a failed backend looks to NGINX, which fixes what one failed attempt costs."""

    REFUSED = "refused"          # port closed: RST at once, c = 0
    UNREACHABLE = "unreachable"  # killed/stopped/cut off, no answer to SYN: c = connect timeout
    FROZEN = "frozen"            # paused: handshake completes, no answer: c = read timeout


# What a failed backend costs NGINX, and the latest it can be out of rotation: arithmetic on the
# configuration alone, stated before a run (a check's prediction) and on `lab watch`'s screen.


def failed_attempt_cost(policy: UpstreamPolicy, mode: FailureMode | None) -> float:
    """Seconds one failed attempt costs before NGINX counts it and retries (0 for None)."""
    if mode is FailureMode.UNREACHABLE:
        return policy.connect_timeout_s
    if mode is FailureMode.FROZEN:
        return policy.read_timeout_s
    return 0.0


def cost_derivation(policy: UpstreamPolicy, mode: FailureMode | None) -> str:
    """The text saying where ``failed_attempt_cost`` comes from."""
    if mode is FailureMode.UNREACHABLE:
        return (f"c = proxy_connect_timeout = {policy.connect_timeout_s:g} s "
                "(unreachable: the connect hangs until it times out)")
    if mode is FailureMode.FROZEN:
        return (f"c = proxy_read_timeout = {policy.read_timeout_s:g} s "
                "(frozen: the handshake completes, no answer comes)")
    if mode is FailureMode.REFUSED:
        return "c = 0 s (refused: the kernel answers RST at once)"
    return "c = 0 s (no backend failure mode given)"


def ejection_window_s(max_fails: float, workers: float, g: float, c: float,
                      least_conn: bool) -> tuple[float, str]:
    """The latest the last try counted against a failed backend comes after the fault, for
    tries that each fail after ``c`` s, a turn of ``g`` s per counter's worker, and its
    arithmetic. Round robin (and the hashes, random) send the failed backend a try every turn
    whether or not one to it is still in progress: its tries overlap. least_conn sends none
    while one is in progress (that keeps it the busiest), so its tries come one after another,
    each a turn after the last one failed."""
    if least_conn:
        return (max_fails * (c + workers * g),
                f"max_fails * (c + workers * g) = {max_fails:g} * ({c:g} + {workers:g} * {g:.3f})")
    return (c + max_fails * workers * g,
            f"c + max_fails * workers * g = {c:g} + {max_fails:g} * {workers:g} * {g:.3f}")


def worst_case_ejection_s(policy: UpstreamPolicy, mode: FailureMode | None,
                          rate_per_s: float) -> tuple[float, str]:
    """The latest the last routed attempt can come after the fault, and its arithmetic."""
    return ejection_window_s(policy.max_fails, policy.counters,
                             len(policy.servers) / (rate_per_s or 1.0),
                             failed_attempt_cost(policy, mode), policy.balancing == "least_conn")


# -- PgBouncer, PostgreSQL, Redis, the backends -----------------------------------------------


@dataclass(frozen=True)
class PgBouncerPolicy:
    """The pool settings PgBouncer runs with for the app database."""

    pool_mode: str
    default_pool_size: int
    reserve_pool_size: int
    max_client_conn: int
    server_login_retry_s: float = 15.0
    query_wait_timeout_s: float = 120.0

    @property
    def server_bound(self) -> int:
        """Most server connections one pool may hold (docs/semantics.md §3)."""
        return self.default_pool_size + self.reserve_pool_size


@dataclass(frozen=True)
class PostgresPolicy:
    """The database settings that decide durability and the connection ceiling."""

    synchronous_commit: bool
    max_connections: int


@dataclass(frozen=True)
class RedisPolicy:
    """Whether the lock store keeps its data across a restart."""

    persistence: bool


@dataclass(frozen=True)
class BackendPolicy:
    """The backends' job schedule, lock leases and dependency budgets (their LAB_* environment)."""

    replicas: int
    job_interval_s: float
    lock_ttl_s: float
    job_duration_s: float
    dependency_timeout_s: float
    drain_s: float
    locking: bool = True
    fencing: bool = True
    lock_renewal: bool = True
    # The jobs the scheduler runs: the checks judge these (a contract may name its own).
    jobs: tuple[str, ...] = REFERENCE_JOBS
    # The Redis key of a job's lock, "{job}" standing for the job ("": not known, a contract
    # that names none).
    lock_key: str = REFERENCE_LOCK_PREFIX + "{job}"

    @property
    def db_budget_s(self) -> float:
        """How long a request waits for the database: the backend's documented rule,
        clamp(2 x LAB_DEPENDENCY_TIMEOUT_S, 1 s, 2 s) (images/backend/README.md)."""
        return max(1.0, min(2.0, 2 * self.dependency_timeout_s))

    @property
    def max_run_s(self) -> float:
        """The longest a job run can last: its work plus a bounded wait per database call."""
        return self.job_duration_s + 4 * self.dependency_timeout_s + 1


@dataclass(frozen=True)
class DocumentedPort:
    """A port the lab documents for a role: on 127.0.0.1, at ``host_port`` (0: any)."""

    role: str
    container_port: str
    host_port: int = 0


# -- the record -------------------------------------------------------------------------------


class ExpectationUnavailable(Exception):
    """A part of the expectations could not be read; the checks that need it are unknown."""


@dataclass(frozen=True)
class Part:
    """One part of the expectations: its value, or why it could not be read, and its source."""

    value: object | None
    source: str                  # "nginx.conf served by nginx", "claimed: lab.toml defaults", ...
    error: str | None = None

    def get(self, what: str) -> object:
        if self.error is not None or self.value is None:
            raise ExpectationUnavailable(f"{what} expectations unavailable ({self.source}): "
                                         f"{self.error or 'not read'}")
        return self.value


@dataclass(frozen=True)
class Expectations:
    """The configuration a run is judged against, part by part, each with where it came from."""

    parts: Mapping[str, Part]
    server_name: str                               # the TLS host name clients ask for
    documented_ports: tuple[DocumentedPort, ...]
    roles: Mapping[str, str] = field(default_factory=dict)   # node -> role

    def _part(self, name: str) -> object:
        part = self.parts.get(name)
        if part is None:
            raise ExpectationUnavailable(f"{name} expectations were not built")
        return part.get(name)

    @property
    def nginx(self) -> NginxPolicy:
        return self._part("nginx")  # type: ignore[return-value]

    @property
    def pgbouncer(self) -> PgBouncerPolicy:
        return self._part("pgbouncer")  # type: ignore[return-value]

    @property
    def postgres(self) -> PostgresPolicy:
        return self._part("postgres")  # type: ignore[return-value]

    @property
    def redis(self) -> RedisPolicy:
        return self._part("redis")  # type: ignore[return-value]

    @property
    def backend(self) -> BackendPolicy:
        return self._part("backend")  # type: ignore[return-value]

    @property
    def upstream(self) -> UpstreamPolicy:
        return self.nginx.upstream

    def upstream_for(self, path: str | None) -> UpstreamPolicy:
        """The backend pool's settings as a request for ``path`` meets them (its location's
        timeouts and retries); the pool's "/" settings for no path or an unproxied one."""
        nginx = self.nginx
        found = nginx.upstream_for(path) if path else None
        return found if found is not None and found.name == nginx.upstream.name \
            else nginx.upstream

    def sources(self) -> dict[str, str]:
        """Part -> where it came from (and the error, when it could not be read)."""
        return {name: part.source + (f" (unavailable: {part.error})" if part.error else "")
                for name, part in self.parts.items()}


# -- names scenario durations may use -----------------------------------------------------------

DURATION_NAMES = ("fail_timeout", "connect_timeout", "read_timeout", "max_fails", "interval",
                  "workers", "least_conn", "rate", "job_interval", "lock_ttl", "job_duration",
                  "server_login_retry", "db_budget", "dependency_timeout", "drain",
                  "client_timeout")


def _ejection(names: Mapping[str, float], c: float) -> float:
    # Tries the clients abandon first are not counted, and end as the client goes: least_conn's
    # tries then come no slower than round robin's, and only refused connects can eject.
    serial = names["least_conn"] >= 1 and c < names["client_timeout"]
    return ejection_window_s(names["max_fails"], names["workers"], names["interval"], c,
                             serial)[0]


# Functions a duration may call, each given the names and its arguments: a wait of
# "min(connect_timeout, client_timeout) + 2" stays sensible when a user's connect timeout is ten
# minutes, and "ejection(c)" is the ejection window the checks predict, for tries costing c.
DURATION_FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": lambda names, *args: min(args),
    "max": lambda names, *args: max(args),
    "ejection": _ejection,
}


def duration_names(expectations: Expectations, rate_per_s: float,
                   client_timeout_s: float = 10.0) -> dict[str, float]:
    """The values of ``DURATION_NAMES``: from NGINX, PgBouncer and the backends as expected,
    the scenario's total request rate (``interval`` is one round-robin turn per backend) and
    its clients' shortest patience (``client_timeout``)."""
    upstream = expectations.upstream
    rate = rate_per_s or 1.0
    names = {"fail_timeout": upstream.fail_timeout_s, "connect_timeout": upstream.connect_timeout_s,
             "read_timeout": upstream.read_timeout_s, "max_fails": float(upstream.max_fails),
             "rate": rate, "interval": len(upstream.servers) / rate,
             "workers": float(upstream.counters),
             "least_conn": float(upstream.balancing == "least_conn"),
             "client_timeout": client_timeout_s}
    try:
        backend = expectations.backend
        names |= {"job_interval": backend.job_interval_s, "lock_ttl": backend.lock_ttl_s,
                  "job_duration": backend.job_duration_s, "db_budget": backend.db_budget_s,
                  "dependency_timeout": backend.dependency_timeout_s, "drain": backend.drain_s}
    except ExpectationUnavailable:
        pass
    try:
        names["server_login_retry"] = expectations.pgbouncer.server_login_retry_s
    except ExpectationUnavailable:
        pass
    return names


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv}
_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "×", ast.Div: "/"}


def _tree(expression: float | str) -> ast.AST:
    try:
        return ast.parse(str(expression), mode="eval").body
    except SyntaxError:
        raise ValueError(f"not a duration expression: {expression!r}") from None


def evaluate_duration(expression: float | str, names: Mapping[str, float]) -> float:
    """A duration: a number, or + - * / over numbers and the given names."""
    if isinstance(expression, int | float):
        return float(expression)

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise ValueError(f"unknown name {node.id!r} (names: {', '.join(DURATION_NAMES)})")
            return float(names[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in DURATION_FUNCTIONS and node.args and not node.keywords):
            function = DURATION_FUNCTIONS[node.func.id]
            try:
                return float(function(names, *(walk(a) for a in node.args)))
            except TypeError:
                raise ValueError(f"{node.func.id}() takes other arguments: "
                                 f"{ast.unparse(node)!r}") from None
        raise ValueError(f"not a duration expression: {ast.unparse(node)!r}")

    return walk(_tree(expression))


def explain_duration(expression: float | str, names: Mapping[str, float]) -> str:
    """The arithmetic of a duration with every name's value shown:
    ``3.45 s = connect_timeout 1 + max_fails 3 × interval 0.15 + 2``."""
    value = evaluate_duration(expression, names)
    if isinstance(expression, int | float):
        return f"{value:g} s"

    def show(node: ast.AST, parent: int = 0) -> str:
        if isinstance(node, ast.Constant):
            return f"{node.value:g}"
        if isinstance(node, ast.Name):
            return f"{node.id} {names[node.id]:.4g}"
        if isinstance(node, ast.UnaryOp):
            return f"-{show(node.operand, 3)}"
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            call = f"{node.func.id}({', '.join(show(a) for a in node.args)})"
            if node.func.id != "ejection":
                return call     # min and max: their pick is among the values shown
            c = evaluate_duration(ast.unparse(node.args[0]), names)
            value, arithmetic = ejection_window_s(
                names["max_fails"], names["workers"], names["interval"], c,
                names["least_conn"] >= 1 and c < names["client_timeout"])
            return f"{call} {value:.4g} [{arithmetic.replace(' g', ' interval')}]"
        assert isinstance(node, ast.BinOp)
        rank = 1 if isinstance(node.op, ast.Add | ast.Sub) else 2
        text = f"{show(node.left, rank)} {_SYMBOLS[type(node.op)]} {show(node.right, rank + 1)}"
        return f"({text})" if rank < parent else text

    tree = _tree(expression)
    if isinstance(tree, ast.Constant):
        return f"{value:g} s"
    return f"{value:.4g} s = {show(tree)}"


def check_duration(value: float | str) -> float | str:
    """A duration expression's names and syntax, checked now with stand-in values, so that a
    typo fails when the scenario loads, before anything starts.

    Seconds, or ``+ - * /`` over numbers, names and calls. The names are the running
    configuration's: ``fail_timeout``, ``connect_timeout``, ``read_timeout``, ``max_fails`` (the
    pool's), ``interval`` (one turn of the pool at the scenario's request rate: servers / rate),
    ``workers`` (separate failure counts: NGINX's workers without a zone, else 1),
    ``least_conn`` (1 when the pool balances by it, else 0), ``rate``, ``client_timeout`` (the
    clients' shortest), ``job_interval``, ``lock_ttl``, ``job_duration``, ``db_budget``,
    ``dependency_timeout``, ``drain``, ``server_login_retry``. The calls: ``min(...)``,
    ``max(...)`` and ``ejection(c)``, the latest a backend whose tries each fail after ``c`` s
    is out of rotation, as the ejection check predicts it (``c + max_fails * workers *
    interval``; least_conn, when c is below client_timeout: ``max_fails * (c + workers *
    interval)``)."""
    result = evaluate_duration(value, {name: 1.0 for name in DURATION_NAMES})
    if isinstance(value, int | float) and result < 0:
        raise ValueError("a duration cannot be negative")
    return value


# A duration in a scenario file: seconds, or an expression over DURATION_NAMES.
DurationExpr = Annotated[float | str, AfterValidator(check_duration)]
