"""The topology as data: which nodes run, with which image, address, files and ports.

Pure: given a configuration, secrets, images and a subnet it returns ``NodePlan`` records;
``lab.topology.lab`` turns them into containers. The compose file in ``compose/`` describes
the same nodes and is kept consistent with this plan by a test.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from lab.config import LabConfig
from lab.engine import LABEL_KIND, LABEL_LAB, LABEL_NODE, LABEL_ROLE, ContainerSpec, FileSpec
from lab.topology.render import (
    BACKEND_PORT,
    PGBOUNCER_PORT,
    STATUS_PORT,
    LabSecrets,
    render_nginx,
    render_pgbouncer_ini,
    render_postgres_env,
    render_postgresql_conf,
    render_redis_conf,
    render_userlist,
)
from lab.topology.tls import TlsMaterial
from lab.topology.user_nginx import nginx_command, nginx_file_specs
from lab.topology.user_topology import UserTopology
from lab.topology.userbackend import user_backend_env

# Start order. Nodes of one stage start together; a stage in ``READY_BEFORE`` is awaited
# before the next starts. PgBouncer waits for PostgreSQL: a failed server login makes it refuse
# every new client for server_login_retry (15 s), which is what a too-early start costs.
# NGINX resolves its upstream names once, at start, so it comes after the backends exist.
STAGES: tuple[tuple[str, ...], ...] = (("postgres", "redis", "backend"), ("pgbouncer", "nginx"))
READY_BEFORE_NEXT_STAGE: tuple[str, ...] = ("postgres",)

# The orchestrator's finer form of the same order: role -> ((role, "started" | "ready"), ...)
# that must hold before a node of the role starts (``START_AFTER``), before its gated process
# is let go (``GATED``: the container starts at once, its entrypoint waits for SIGUSR2), or
# before its readiness is probed (``PROBE_AFTER``). Everything else starts at once.
# - PgBouncer runs only once PostgreSQL answers (server_login_retry, above); its container
#   starts with the others, so Docker's start (0.3-0.9 s on 2 busy cores) is off the path.
# - NGINX needs the backends' names to resolve (their containers running), not their
#   readiness; it is probed only once every backend answered directly, or its passive checks
#   would eject them for fail_timeout.
# - A backend cannot be ready before PgBouncer and Redis are, so it is not asked before.
# ``tests/unit/test_plan.py`` keeps this consistent with ``STAGES`` (compose's order).
START_AFTER: dict[str, tuple[tuple[str, str], ...]] = {
    "nginx": (("backend", "started"),),
}
GATED: dict[str, tuple[tuple[str, str], ...]] = {
    "pgbouncer": (("postgres", "ready"),),
}
PROBE_AFTER: dict[str, tuple[tuple[str, str], ...]] = {
    "pgbouncer": (("postgres", "ready"),),
    "backend": (("pgbouncer", "ready"), ("redis", "ready")),
    "nginx": (("backend", "ready"),),
}
# The file whose presence makes a gated image's entrypoint wait (images/pgbouncer).
START_GATE_FILE = "/etc/lab/start-gate"
# Repeated until the node answers (images/pgbouncer/entrypoint.sh says why that is safe).
START_GATE_SIGNAL = "SIGUSR2"

HOST_OFFSETS = {"postgres": 10, "pgbouncer": 11, "redis": 12, "nginx": 30}
BACKEND_OFFSET = 20
# The lab's /24: nodes sit below 32, Docker's IPAM hands out from 2, a load generator on the
# network sends from 128 up (lab/load/placement.py); a gateway the lab picks stays below.
FIRST_CLIENT_ADDRESS = 128


@dataclass(frozen=True)
class NodePlan:
    """One node: its name in the topology, its role and the container that runs it."""

    name: str
    role: str
    spec: ContainerSpec


def network_name(lab: str) -> str:
    return f"lab-{lab}"


def container_name(lab: str, node: str) -> str:
    return f"lab-{lab}-{node}"


def node_roles(config: LabConfig) -> dict[str, str]:
    """Node name -> role, in start order."""
    roles = {"postgres": "postgres", "redis": "redis", "pgbouncer": "pgbouncer"}
    roles.update({name: "backend" for name in config.backend_names})
    roles["nginx"] = "nginx"
    return roles


def node_address(config: LabConfig, subnet: ipaddress.IPv4Network, node: str) -> str:
    if node.startswith("backend-"):
        return str(subnet[BACKEND_OFFSET + int(node.split("-")[1])])
    return str(subnet[HOST_OFFSETS[node]])


def backend_env(config: LabConfig, secrets: LabSecrets, node: str) -> dict[str, str]:
    """The reference backend's documented environment (images/backend/README.md)."""
    b, pg = config.backend, config.postgres
    return {
        "LAB_NODE_ID": node,
        "LAB_PORT": str(BACKEND_PORT),
        "LAB_DATABASE_URL": f"postgresql://{pg.user}:{secrets.db_password}@pgbouncer:{PGBOUNCER_PORT}/{pg.database}",
        "LAB_REDIS_URL": "redis://redis:6379/0",
        "LAB_TOKEN_SECRET": secrets.token_secret,
        "LAB_ADMIN_TOKEN": secrets.admin_token,
        "LAB_WEBHOOK_SECRET": secrets.webhook_secret,
        "LAB_SEED_PASSWORD": secrets.seed_password,
        "LAB_JOB_INTERVAL_S": str(b.job_interval_s),
        "LAB_LOCK_TTL_S": str(b.lock_ttl_s),
        "LAB_JOB_DURATION_S": str(b.job_duration_s),
        "LAB_DEPENDENCY_TIMEOUT_S": str(b.dependency_timeout_s),
        "LAB_LOCKING": "1" if b.locking else "0",
        "LAB_FENCING": "1" if b.fencing else "0",
        "LAB_LOCK_RENEWAL": "1" if b.lock_renewal else "0",
        "LAB_HEALTH_CHECKS_REDIS": "1" if b.health_checks_redis else "0",
        "LAB_READINESS_GATES": "1" if b.readiness_gates else "0",
        "LAB_STOP_TIMEOUT_S": str(b.stop_timeout_s),
        "LAB_DRAIN_S": str(b.drain_s),
    }


def plan(
    config: LabConfig,
    secrets: LabSecrets,
    tls: TlsMaterial,
    images: dict[str, str],
    subnet: ipaddress.IPv4Network,
    *,
    extra_labels: dict[str, str] | None = None,
    nginx_conf: str | None = None,
    extra_publish: Mapping[str, Mapping[str, int]] | None = None,
    user: UserTopology | None = None,
    extra_env: Mapping[str, Mapping[str, str]] | None = None,
) -> list[NodePlan]:
    """Every node of the lab, in start order. ``nginx_conf`` replaces the rendered one and
    ``extra_publish`` (node -> {container port: host port}) publishes more than documented:
    negative controls run a deliberately broken load balancer or an exposed node. ``user``
    carries the user's own files and backend (lab.topology.user_topology). ``extra_env`` (node ->
    variables) changes a node's environment: the load comparison's "before" runs its one
    backend straight on PostgreSQL."""
    port = user.backend_port if user is not None else BACKEND_PORT
    network = network_name(config.name)
    publish = config.publish
    nodes: list[NodePlan] = []
    for node, role in node_roles(config).items():
        labels = {LABEL_LAB: config.name, LABEL_ROLE: role, LABEL_NODE: node, LABEL_KIND: "node",
                  **(extra_labels or {})}
        env: dict[str, str] = {}
        files: tuple[FileSpec, ...] = ()
        ports: dict[str, int] = {}
        stop_timeout = 10
        command: tuple[str, ...] | None = None
        aliases: tuple[str, ...] = (node,)
        if role == "postgres":
            files = (FileSpec("/etc/lab/postgres.env",
                              render_postgres_env(config, secrets).encode(), 0o644),
                     FileSpec("/etc/lab/postgresql.conf", render_postgresql_conf(config).encode()))
            ports = {"5432/tcp": publish.postgres}
        elif role == "pgbouncer":
            ini = user.pgbouncer.ini if user and user.pgbouncer else render_pgbouncer_ini(config)
            files = (FileSpec("/etc/lab/pgbouncer.ini", ini.encode()),
                     FileSpec("/etc/lab/userlist.txt",
                              render_userlist(config, secrets).encode(), 0o600))
            ports = {f"{PGBOUNCER_PORT}/tcp": publish.pgbouncer}
        elif role == "redis":
            files = (FileSpec("/etc/lab/redis.conf", render_redis_conf(config).encode()),)
            ports = {"6379/tcp": publish.redis}
        elif role == "backend":
            env = (user_backend_env(config, secrets, node, port) if user and user.user_backend
                   else {**backend_env(config, secrets, node), "LAB_PORT": str(port)})
            stop_timeout = config.backend.stop_timeout_s
            if user is not None and user.nginx is not None:
                # The host names the user's upstream blocks use resolve to this backend.
                aliases += user.nginx.aliases.get(node, ())
        elif role == "nginx" and user is not None and user.nginx is not None:
            files = nginx_file_specs(user.nginx, tls)
            command = nginx_command(user.nginx)
            # The site's own ports (80 and 443, or the ports its proxying servers listen on).
            ports = {f"{p}/tcp": host for p, host in ((user.nginx.plain_port, publish.nginx_http),
                                                      (user.nginx.tls_port, publish.nginx_https))
                     if p is not None}
        elif role == "nginx":
            rendered = nginx_conf or render_nginx(config, backend_port=port)
            files = (FileSpec("/etc/lab/nginx.conf", rendered.encode()),
                     FileSpec("/etc/lab/tls/server.crt", tls.cert_pem),
                     FileSpec("/etc/lab/tls/server.key", tls.key_pem, 0o600),
                     FileSpec("/etc/lab/tls/ca.crt", tls.ca_pem))
            ports = {"80/tcp": publish.nginx_http, "443/tcp": publish.nginx_https,
                     f"{STATUS_PORT}/tcp": 0}
        spec = ContainerSpec(
            name=container_name(config.name, node), image=images[role], labels=labels,
            network=network, ipv4_address=node_address(config, subnet, node), aliases=aliases,
            env={**env, **(extra_env or {}).get(node, {})}, command=command, files=files,
            publish={**ports, **(extra_publish or {}).get(node, {})},
            stop_timeout_s=stop_timeout,
        )
        nodes.append(NodePlan(node, role, spec))
    return nodes
