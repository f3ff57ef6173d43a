"""Building the expectations record (``lab.expectations.Expectations``).

``running(lab)`` reads what really runs: the nginx.conf the NGINX container serves, PgBouncer's
own ``SHOW CONFIG`` / ``SHOW DATABASES``, the backends' ``LAB_*`` environment as Docker holds
it, Redis's ``CONFIG GET`` and PostgreSQL's ``SHOW``. ``claimed(config)`` derives the same record
from a configuration someone claims (a checklist), without looking at a lab: negative
controls run a deliberately broken topology and judge it against that claim.

Each part is read on its own; one that cannot be read is kept as its error, so that only the
checks that need it report ``unknown``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import psycopg
import redis

from lab.config import BackendConfig, LabConfig, PublishConfig
from lab.errors import ConfigError
from lab.expectations import (
    BackendPolicy,
    DocumentedPort,
    Expectations,
    NginxPolicy,
    Part,
    PgBouncerPolicy,
    PostgresPolicy,
    RedisPolicy,
)
from lab.topology.lab import Lab
from lab.topology.nginx_policy import parse_nginx_policy, policy_from_tree
from lab.topology.pgbouncer_ini import parse_pgbouncer_ini
from lab.topology.plan import node_roles
from lab.topology.render import PGBOUNCER_PORT, STATUS_PORT, render_nginx
from lab.topology.user_nginx import client_server_name, user_nginx
from lab.topology.user_pgbouncer import user_pgbouncer

# The backend's own defaults for a LAB_* variable its environment does not set
# (images/backend/lab_backend/config.py).
_BACKEND_DEFAULTS = BackendConfig()


def documented_ports(publish: PublishConfig, *, stub_status: bool = True,
                     site: tuple[int | None, int | None] = (80, 443)
                     ) -> tuple[DocumentedPort, ...]:
    """The published ports lab.toml's ``[publish]`` documents: NGINX's site ports (``site``:
    plain and TLS, 80 and 443 unless a user's site listens elsewhere), the rendered
    nginx.conf's stub_status (always on an ephemeral port; a user's own nginx.conf has none);
    a role not named publishes nothing."""
    status = (DocumentedPort("nginx", f"{STATUS_PORT}/tcp", 0),) if stub_status else ()
    plain, tls = site
    nginx = tuple(DocumentedPort("nginx", f"{port}/tcp", host) for port, host in
                  ((plain, publish.nginx_http), (tls, publish.nginx_https)) if port is not None)
    return (*nginx,
            *status,
            DocumentedPort("pgbouncer", f"{PGBOUNCER_PORT}/tcp", publish.pgbouncer),
            DocumentedPort("postgres", "5432/tcp", publish.postgres),
            DocumentedPort("redis", "6379/tcp", publish.redis))


def _part(source: str, read: Callable[[], object]) -> Part:
    try:
        return Part(read(), source)
    except Exception as exc:  # noqa: BLE001 - a part that cannot be read is kept as its error
        return Part(None, source, f"{type(exc).__name__}: {exc}")


def _backend_from_config(config: LabConfig) -> BackendPolicy:
    b = config.backend
    if b.contract is not None:
        return backend_from_contract(config)
    return BackendPolicy(b.replicas, b.job_interval_s, b.lock_ttl_s, b.job_duration_s,
                         b.dependency_timeout_s, b.drain_s, b.locking, b.fencing, b.lock_renewal)


def backend_from_contract(config: LabConfig) -> BackendPolicy:
    """A user's backend: what its contract in lab.toml says its scheduler does (a black box
    has no LAB_* environment to read)."""
    c = config.backend.contract
    assert c is not None
    return BackendPolicy(config.backend.replicas, c.job_interval_s, c.lock_ttl_s,
                         c.job_duration_s, c.dependency_timeout_s, c.drain_s, True, c.fencing,
                         c.lock_renewal, jobs=c.jobs,
                         lock_key=c.locks.key if c.locks is not None else "")


def _claimed_nginx(config: LabConfig) -> NginxPolicy:
    # What the files claim, read statically: directives NGINX would refuse are skipped here
    # (`lab up` refuses them; `lab lint` explains them).
    user = user_nginx(config, strict=False)
    if user is None:
        return parse_nginx_policy(render_nginx(config))
    return policy_from_tree(user.tree, nodes=user.nodes, upstream=config.nginx.upstream)


def _claimed_pgbouncer(config: LabConfig) -> PgBouncerPolicy:
    user = user_pgbouncer(config)
    assert user is not None
    return parse_pgbouncer_ini(user.ini, database=config.postgres.database, file=user.source)


def claimed(config: LabConfig, *, what: str = "claimed configuration") -> Expectations:
    """The expectations a configuration implies, read from it alone (no lab)."""
    p, pg = config.pgbouncer, config.postgres
    source = f"{what} ({config.name})"
    parts = {
        "nginx": _part(f"{source}: " + ("your nginx conf, as the lab would run it"
                                         if config.nginx.conf else "rendered nginx.conf"),
                       lambda: _claimed_nginx(config)),
        "pgbouncer": _part(f"{source}: {p.ini}", lambda: _claimed_pgbouncer(config)) if p.ini
        else Part(PgBouncerPolicy(p.pool_mode, p.default_pool_size, p.reserve_pool_size,
                                  p.max_client_conn, float(p.server_login_retry_s),
                                  float(p.query_wait_timeout_s)), f"{source}: [pgbouncer]"),
        "postgres": Part(PostgresPolicy(pg.synchronous_commit, pg.max_connections),
                         f"{source}: [postgres]"),
        "redis": Part(RedisPolicy(config.redis.persistence), f"{source}: [redis]"),
        "backend": Part(_backend_from_config(config), f"{source}: [backend]"
                        + (" contract" if config.backend.contract else "")),
    }
    site: tuple[int | None, int | None] = (80, 443)
    if config.nginx.conf:
        try:
            user = user_nginx(config, strict=False)
        except ConfigError:
            user = None   # the nginx part holds the error; the ports stay the usual ones
        if user is not None:
            site = (user.plain_port, user.tls_port)
    return Expectations(parts, client_server_name(config),
                        documented_ports(config.publish, stub_status=config.nginx.conf is None,
                                         site=site),
                        node_roles(config))


# -- what runs ------------------------------------------------------------------------------------


def _pgbouncer(lab: Lab) -> PgBouncerPolicy:
    with psycopg.connect(lab.endpoints.pgbouncer_admin_dsn, autocommit=True, connect_timeout=5,
                         cursor_factory=psycopg.ClientCursor) as conn:
        config = {key: value for key, value, *_ in conn.execute("SHOW CONFIG").fetchall()}
        cursor = conn.execute("SHOW DATABASES")
        columns = [d.name for d in cursor.description or ()]
        databases = {row[0]: dict(zip(columns, row, strict=False)) for row in cursor.fetchall()}
    app = databases.get(lab.config.postgres.database, {})
    # A database's own pool_size / reserve_pool / pool_mode win over the global settings.
    pool_size = (app.get("pool_size") if app.get("pool_size") is not None
                 else config["default_pool_size"])
    reserve = (app.get("reserve_pool") if app.get("reserve_pool") is not None
               else config["reserve_pool_size"])
    return PgBouncerPolicy(app.get("pool_mode") or config["pool_mode"], int(pool_size),
                           int(reserve),
                           int(config["max_client_conn"]), float(config["server_login_retry"]),
                           float(config["query_wait_timeout"]))


def _postgres(lab: Lab) -> PostgresPolicy:
    with psycopg.connect(lab.endpoints.postgres_dsn, autocommit=True, connect_timeout=5) as conn:
        synchronous = conn.execute("SHOW synchronous_commit").fetchone()
        limit = conn.execute("SHOW max_connections").fetchone()
    assert synchronous is not None and limit is not None
    return PostgresPolicy(synchronous[0] != "off", int(limit[0]))


def _redis(lab: Lab) -> RedisPolicy:
    with redis.Redis.from_url(lab.endpoints.redis_url, socket_timeout=5,
                              socket_connect_timeout=5) as client:
        appendonly = client.config_get("appendonly").get("appendonly", "no")
        save = client.config_get("save").get("save", "")
    return RedisPolicy(persistence=appendonly == "yes" or bool(save.strip()))


def backend_from_env(env: Mapping[str, str], replicas: int) -> BackendPolicy:
    """The backend policy its ``LAB_*`` environment gives (the backend's defaults where unset)."""
    d = _BACKEND_DEFAULTS

    def number(name: str, default: float) -> float:
        raw = env.get(name, "").strip()
        return float(raw) if raw else default

    def flag(name: str, default: bool) -> bool:
        raw = env.get(name, "").strip().lower()
        return default if not raw else raw in ("1", "true", "yes", "on")

    return BackendPolicy(
        replicas=replicas,
        job_interval_s=number("LAB_JOB_INTERVAL_S", d.job_interval_s),
        lock_ttl_s=number("LAB_LOCK_TTL_S", d.lock_ttl_s),
        job_duration_s=number("LAB_JOB_DURATION_S", d.job_duration_s),
        dependency_timeout_s=number("LAB_DEPENDENCY_TIMEOUT_S", d.dependency_timeout_s),
        drain_s=number("LAB_DRAIN_S", d.drain_s),
        locking=flag("LAB_LOCKING", d.locking), fencing=flag("LAB_FENCING", d.fencing),
        lock_renewal=flag("LAB_LOCK_RENEWAL", d.lock_renewal))


def _backend(lab: Lab) -> BackendPolicy:
    if lab.config.backend.contract is not None:
        return backend_from_contract(lab.config)
    backends = [node for node, role in lab.roles.items() if role == "backend"]
    policies = set()
    for node in backends:
        info = lab.inspect(node)
        if info is None:
            raise LookupError(f"{node} has no container")
        policies.add(backend_from_env(info.env, len(backends)))
    if len(policies) != 1:
        raise ValueError("the backends run with different LAB_* settings; "
                         "the checks need one policy")
    return policies.pop()


def running(lab: Lab) -> Expectations:
    """The expectations of what this lab really runs, read from its nodes.

    The five parts come from five different nodes and do not depend on one another: they are
    read at once, so the record costs the slowest read (nginx -T), not their sum."""
    readers: dict[str, tuple[str, Callable[[], object]]] = {
        "nginx": ("what NGINX loaded (nginx -T in the nginx container)",
                  lab.nginx_policy),
        "pgbouncer": ("PgBouncer's SHOW CONFIG and SHOW DATABASES", lambda: _pgbouncer(lab)),
        "postgres": ("PostgreSQL's SHOW synchronous_commit, max_connections",
                     lambda: _postgres(lab)),
        "redis": ("Redis's CONFIG GET appendonly, save", lambda: _redis(lab)),
        "backend": ("the backend contract in lab.toml ([backend.contract])"
                    if lab.config.backend.contract is not None
                    else "the backends' LAB_* environment (docker inspect)",
                    lambda: _backend(lab)),
    }
    with ThreadPoolExecutor(max_workers=len(readers)) as pool:
        futures = {name: pool.submit(_part, source, read)
                   for name, (source, read) in readers.items()}
        parts = {name: future.result() for name, future in futures.items()}
    return Expectations(parts, lab.server_name,
                        documented_ports(lab.config.publish,
                                         stub_status=lab.config.nginx.conf is None,
                                         site=lab.site_ports),
                        dict(lab.roles))
