"""The lint rules, one name each, in the order ``lab lint`` prints them.

Each rule reads the configuration in force (``LintInput``) and returns its findings; the
consequences quote what the lab measured (README, "What the lab measured") and the NGINX,
PgBouncer and Redis rules in docs/semantics.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from lab.checks.locks import EXCLUSIVITY, FENCING, HOLDERS, PAUSED, STORE_RESTART, TAKEOVER
from lab.expectations import ExpectationUnavailable, UpstreamPolicy
from lab.lint.model import Finding, Level, LintInput, Rule
from lab.objectives import text_seconds
from lab.registry import Registry
from lab.topology.nginx_conf import Directive, route, walk
from lab.topology.userconf import UNPROVIDABLE

RULES: Registry[Rule] = Registry("lint rule")

# PostgreSQL keeps this many of max_connections for superusers (its default).
SUPERUSER_RESERVED = 3
# Keys that tell clients apart: one bucket per client address (or per client identity).
CLIENT_KEYS = ("$binary_remote_addr", "$remote_addr", "$realip_remote_addr",
               "$http_x_forwarded_for", "$http_x_real_ip", "$proxy_protocol_addr",
               "$http_authorization", "$cookie_", "$arg_", "$jwt_")
_EJECTION = frozenset({"ejection", "readmission"})
_LOCKS = frozenset({EXCLUSIVITY, FENCING, HOLDERS, TAKEOVER, PAUSED, STORE_RESTART})


def rule(name: str, summary: str, concerns: frozenset[str] = frozenset()):
    """Register the decorated function as the lint rule ``name``."""
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


def _directive_where(lint: LintInput, name: str, fallback: str) -> str:
    found = [d for d in walk(lint.tree) if d.name == name]
    return found[-1].where if found else fallback


# -- NGINX: ejection and re-admission -------------------------------------------------------


@rule("no-ejection", "max_fails=0 (or one server): a failed backend is never taken out",
      _EJECTION | {"availability", "latency"})
def _no_ejection(lint: LintInput) -> list[Finding]:
    upstream = _upstream(lint)
    if upstream is None:
        return []
    n = len(upstream.servers)
    if upstream.max_fails == 0:
        return [Finding(
            "no-ejection", Level.ERROR, _upstream_where(lint, upstream),
            f"upstream {upstream.name}: max_fails=0 disables failure counting",
            f"a dead backend stays in rotation: 1 in {n} requests goes to it and waits "
            f"proxy_connect_timeout {text_seconds(upstream.connect_timeout_s)} (killed) or "
            f"proxy_read_timeout {text_seconds(upstream.read_timeout_s)} (frozen) before its "
            "retry, for as long as the backend is down",
            "max_fails=3 fail_timeout=10s on each server")]
    if n == 1 and not upstream.backup_servers:
        return [Finding(
            "no-ejection", Level.WARNING, _upstream_where(lint, upstream),
            f"upstream {upstream.name} has 1 server: NGINX never marks a single server down",
            "when it fails every request fails; there is nothing to fail over to",
            "run two or more backends (or a backup server)")]
    return []


@rule("readmission-window", "fail_timeout longer than the readmission objective allows",
      frozenset({"readmission"}))
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
        "a backend that is back is sent no request until fail_timeout has passed since its "
        "last failure (open-source NGINX has no active check to notice sooner); measured: "
        "fail_timeout 10 s gave re-admission 9.6-11 s after the heal",
        f"fail_timeout={max(1, int(objective) - 2)}s or less, or relax the readmission "
        "objective")]


@rule("failing-latency", "connect/read timeouts longer than the failing-latency objective",
      frozenset({"latency"}))
def _failing_latency(lint: LintInput) -> list[Finding]:
    upstream = _upstream(lint)
    if upstream is None:
        return []
    objective = lint.objectives.failing_latency
    out = []
    for name, value, how in (
            ("proxy_connect_timeout", upstream.connect_timeout_s,
             "killed or cut off (no answer to SYN)"),
            ("proxy_read_timeout", upstream.read_timeout_s, "frozen (handshake done, no answer)")):
        if value < objective:
            continue
        out.append(Finding(
            "failing-latency", Level.ERROR,
            _directive_where(lint, name,
                             f"{lint.nginx_source} ({name} not set: NGINX's default)"),
            f"{name} {text_seconds(value)} >= objective failing_latency "
            f"{text_seconds(objective)} (p99 while a backend fails)",
            f"every request NGINX routes to a backend that is {how} waits {text_seconds(value)} "
            f"before its retry on the next backend, until max_fails ({upstream.max_fails}) such "
            "tries eject it: those clients see the whole timeout"
            + ("; NGINX's default is 60 s" if value == 60 else ""),
            f"{name} {max(1, int(objective / 2))}s (measured: 1 s connect, 5 s read keep a "
            "failover's p99 near 1 s)"))
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
        f"{w * upstream.max_fails} failed requests, and each worker ejects at its own time",
        "the ejection window depends on which worker a connection lands on; "
        "`worker_processes auto` makes it depend on the machine's cores",
        f"add `zone {upstream.name} 64k;` to the upstream block")]


@rule("health-503-ejects", "http_503 retried while dependency health endpoints are proxied",
      frozenset({"availability", "ejection", "health-contract", "health-detailed-timing"}))
def _health_503(lint: LintInput) -> list[Finding]:
    upstream = _upstream(lint)
    if upstream is None:
        return []
    out = []
    for path in dict.fromkeys((lint.health.detailed, lint.health.ready)):
        found = route(lint.tree, path)
        if found is None or found.upstream is None or "http_503" not in found.next_upstream:
            continue
        n = len(upstream.servers)
        out.append(Finding(
            "health-503-ejects", Level.ERROR, found.where,
            f"{path} is proxied (location {found.location}) with proxy_next_upstream "
            f"{' '.join(found.next_upstream)}: a dependency outage makes all {n} backends answer "
            f"503 there; each request tries every backend and counts one failure against each, "
            f"so max_fails {upstream.max_fails} such requests eject all {n} for fail_timeout "
            f"{text_seconds(upstream.fail_timeout_s)}",
            "a Redis or database outage takes the whole site down: every request gets 502 "
            "(no live upstreams) until fail_timeout passes (measured: 3 requests to "
            "/health/detailed during a Redis outage ejected two of three backends; the fourth "
            "got 502)",
            f"probe dependency health per backend, not through NGINX; or give {path} a "
            "location with `proxy_next_upstream error timeout;`"))
        break
    return out


# -- NGINX: rate limits ---------------------------------------------------------------------


@rule("limit-req-no-burst", "limit_req without burst rejects concurrent clients behind one address",
      frozenset({"rate-limit"}))
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
      frozenset({"rate-limit"}))
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
            if upstream is not None and upstream.max_fails:
                passive = (f"; what runs instead is passive: out after max_fails "
                           f"{upstream.max_fails} failed client requests (each costing "
                           f"proxy_connect_timeout {text_seconds(upstream.connect_timeout_s)} "
                           "when killed), back fail_timeout "
                           f"{text_seconds(upstream.fail_timeout_s)} + 1 s after the last failure")
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
      "PostgreSQL admits", frozenset({"pool-bound"}))
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



