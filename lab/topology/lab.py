"""A lab: the eight-node topology as one object that starts, reports, breaks and removes itself.

Everything a lab creates carries ``io.failover-lab.lab=<name>``; ``down`` removes by that
label, so it also removes what a crashed run left. The lab's configuration and generated
secrets travel as labels of its network, so any later process can attach to a running lab
by name without a state file that could outlive it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from lab.config import LabConfig, parse_config
from lab.engine import (
    LABEL_CONFIG,
    LABEL_KIND,
    LABEL_LAB,
    LABEL_NODE,
    ContainerInfo,
    ContainerSpec,
    ContainerSummary,
    Engine,
    ExecResult,
    FileSpec,
    Removed,
)
from lab.errors import ConfigError, LabError, LabNotFound, NodeStartError, UnknownNode
from lab.expectations import NginxPolicy, UpstreamPolicy
from lab.history import NodeExposure, PortBinding
from lab.topology import images as image_builder
from lab.topology import nginx_hash
from lab.topology.access_log import parse_access_log_line
from lab.topology.client import ClientTarget
from lab.topology.nginx_policy import policy_from_tree
from lab.topology.nginx_tree import Directive, read_tree
from lab.topology.plan import (
    FIRST_CLIENT_ADDRESS,
    GATED,
    PROBE_AFTER,
    START_AFTER,
    START_GATE_FILE,
    START_GATE_SIGNAL,
    NodePlan,
    container_name,
    network_name,
    node_address,
    node_roles,
    plan,
)
from lab.topology.preflight import check_nginx
from lab.topology.readiness import (
    ExecProbe,
    Probe,
    ProbeResult,
    RedisProbe,
    SqlProbe,
    ThroughNginxProbe,
    served_by,
    wait_until_ready,
)
from lab.topology.render import ACCESS_LOG_TAG, PGBOUNCER_ADMIN_USER, PGBOUNCER_PORT, LabSecrets
from lab.topology.timeline import TimelineRecorder, UpTimeline
from lab.topology.tls import TlsMaterial, make_tls
from lab.topology.user_nginx import main_conf_path
from lab.topology.user_site import plain_http_redirect
from lab.topology.user_topology import UserTopology, user_topology
from lab.topology.userbackend import ensure_user_backend, health_command

LABEL_SECRETS = "io.failover-lab.secrets"
LABEL_OWNER = "io.failover-lab.owner"
LABEL_EPHEMERAL = "io.failover-lab.ephemeral"
# A fault record (lab.faults.record): a created, never started container per active fault.
FAULT_RECORD_KIND = "fault-record"
LABEL_FAULT_SIDECAR = "io.failover-lab.fault-sidecar"   # on a record: the sidecar its heal needs
READY_TIMEOUT_S = 90.0
# How long one exec'd backend probe keeps asking during `up` (Ctrl-C waits at most this).
EXEC_PROBE_WAIT_S = 2.0


def owner_id() -> str:
    """Who created a resource: host and process, so orphans of dead processes can be told apart."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's lab: never ours to judge
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_alive(owner: str) -> bool:
    """Whether the process an owner label names still runs (another host's: assumed so)."""
    return _owner_alive(owner)


@dataclass(frozen=True)
class Endpoints:
    """The only addresses the lab process talks to: published ports on 127.0.0.1."""

    nginx_http: str
    nginx_https: str
    postgres_dsn: str
    pgbouncer_dsn: str
    pgbouncer_admin_dsn: str
    redis_url: str


@dataclass(frozen=True)
class NodeStatus:
    name: str
    role: str
    state: str                       # running, paused, exited, missing, ...
    ready: bool
    detail: str
    published: tuple[str, ...]       # "127.0.0.1:49153->80/tcp"
    uptime_s: float | None


@dataclass(frozen=True)
class LabStatus:
    name: str
    nodes: tuple[NodeStatus, ...]
    endpoints: Endpoints | None

    @property
    def ready(self) -> bool:
        return bool(self.nodes) and all(n.ready for n in self.nodes)


@dataclass(frozen=True)
class UpResult:
    already_running: bool
    seconds: float
    images_built: tuple[str, ...]
    leftovers_removed: Removed
    timeline: UpTimeline | None = None   # None for a lab that was already running


class Lab:
    """One named lab on one Docker engine."""

    def __init__(self, engine: Engine, config: LabConfig, secrets: LabSecrets | None = None,
                 *, nginx_conf: str | None = None,
                 extra_publish: Mapping[str, Mapping[str, int]] | None = None,
                 extra_env: Mapping[str, Mapping[str, str]] | None = None):
        self.engine = engine
        self.config = config
        self.name = config.name
        self.secrets = secrets or LabSecrets.generate()
        self._nginx_conf = nginx_conf
        # Negative controls only: node -> {container port: host port} published on top.
        self._extra_publish = extra_publish
        # A topology variant: node -> environment on top of the plan's (lab.topology.plan).
        self._extra_env = extra_env
        self.roles = node_roles(config)
        self._user: UserTopology | None = None
        self._tls: TlsMaterial | None = None        # made by this process's `up`
        self._follows: str | None = None            # port 80's redirect the clients follow
        self._ca: bytes | None = None
        # The running configuration, read once, for where the clients send.
        self._policy: tuple[tuple[Directive, ...], NginxPolicy] | None = None

    # -- attaching ------------------------------------------------------------------------

    @classmethod
    def attach(cls, engine: Engine, name: str) -> Lab:
        """The running lab with this name, its configuration and secrets read from Docker."""
        labels = engine.network_labels(network_name(name))
        if labels is None or LABEL_CONFIG not in labels:
            raise LabNotFound(f"no lab named {name!r} is running",
                              hint=f"start it with `lab up --name {name}`")
        config = parse_config(json.loads(labels[LABEL_CONFIG]), source=f"lab {name} labels")
        secrets = LabSecrets(**json.loads(labels[LABEL_SECRETS]))
        return cls(engine, config, secrets)

    def exists(self) -> bool:
        return self.engine.network_exists(network_name(self.name)) or bool(self._summaries())

    def _containers(self) -> list[ContainerInfo]:
        return self.engine.list_containers({LABEL_LAB: self.name, LABEL_KIND: "node"})

    # -- nodes ----------------------------------------------------------------------------

    def container(self, node: str) -> str:
        """The container name of a node; unknown names are a user error, said once."""
        if node not in self.roles:
            raise UnknownNode(f"no node named {node!r} in lab {self.name!r}",
                              hint=f"nodes: {', '.join(self.roles)}")
        return container_name(self.name, node)

    def exec(self, node: str, command: list[str]) -> ExecResult:
        return self.engine.exec(self.container(node), command)

    def logs(self, node: str, tail: int | str = 50, since: float | None = None) -> str:
        return self.engine.logs(self.container(node), tail=tail, since=since)

    def inspect(self, node: str) -> ContainerInfo | None:
        return self.engine.inspect(self.container(node))

    def kill(self, node: str) -> None:
        self.engine.kill(self.container(node))

    def stop(self, node: str, timeout_s: int | None = None) -> None:
        self.engine.stop(self.container(node), timeout_s)

    def pause(self, node: str) -> None:
        self.engine.pause(self.container(node))

    def unpause(self, node: str) -> None:
        self.engine.unpause(self.container(node))

    def start(self, node: str, *, wait: bool = True,
              timeout_s: float = READY_TIMEOUT_S) -> ProbeResult | None:
        """Start a stopped node; by default wait until it is ready again."""
        self.engine.start(self.container(node))
        return self.wait_ready(node, timeout_s) if wait else None

    def restart(self, node: str, *, timeout_s: float = READY_TIMEOUT_S) -> ProbeResult:
        self.engine.restart(self.container(node))
        return self.wait_ready(node, timeout_s)

    def sidecar_image(self) -> str:
        """The fault sidecar's image (iproute2, iptables, python3), built if missing."""
        refs = image_builder.ensure_images(self.engine, self.config.build, roles=("sidecar",))
        return refs["sidecar"].reference

    def run_client(self, command: list[str], *, timeout_s: float = 60,
                   name: str | None = None) -> ExecResult:
        """Run a short-lived client container on the lab's network (sidecar image) and remove it.

        Traffic from it stays on the lab's own network: a second client with its own address.
        A ``name`` lets another thread read its output or stop it while it runs."""
        spec = ContainerSpec(
            name=name or f"lab-{self.name}-client-{uuid.uuid4().hex[:6]}",
            image=self.sidecar_image(),
            labels={LABEL_LAB: self.name, LABEL_KIND: "sidecar", LABEL_NODE: "client",
                    LABEL_OWNER: owner_id()},
            network=network_name(self.name), command=tuple(command), stop_timeout_s=1,
        )
        return self.engine.run_sidecar(spec, timeout_s=timeout_s)

    def client_logs(self, name: str) -> str:
        """What a running client container (``run_client(name=...)``) printed so far."""
        return self.engine.logs(name)

    def stop_client(self, name: str) -> None:
        """Ask a running client container to end (SIGTERM); ``run_client`` then removes it."""
        self.engine.kill(name, "SIGTERM")

    def nginx_conf(self) -> str:
        """What NGINX actually loaded: ``nginx -T`` in its container (every file it read)."""
        main = main_conf_path(self.config)
        result = self.exec("nginx", ["sh", "-c", f"nginx -T -q -c {main} 2>/dev/null"])
        if result.exit_code != 0 or not result.output.strip():
            raise LabError(f"cannot read nginx's configuration from lab {self.name}: "
                           f"{result.output.strip() or f'nginx -T exited {result.exit_code}'}")
        return result.output

    def nginx_policy(self, *, path: str = "/") -> NginxPolicy:
        """The policy NGINX runs (``nginx -T``), the user's upstream addresses named as the
        lab's nodes and lab.toml's ``[nginx] upstream`` as the backend pool: the one reading
        the expectations, the scenario runner and `lab watch` share."""
        return self._running(path)[1]

    def _running(self, path: str = "/") -> tuple[tuple[Directive, ...], NginxPolicy]:
        nginx = self.user.nginx
        tree = read_tree(self.nginx_conf())
        return tree, policy_from_tree(tree, path=path,
                                      nodes=dict(nginx.nodes) if nginx is not None else None,
                                      upstream=self.config.nginx.upstream)

    @property
    def server_name(self) -> str:
        """The TLS name the lab's clients ask for (SNI and Host) and its certificate is for:
        lab.toml's [nginx] server_name, or the first name of the user's TLS servers."""
        nginx = self.user.nginx
        return nginx.server_name if nginx is not None else self.config.nginx.server_name

    def make_tls(self) -> TlsMaterial:
        """A CA and a certificate for every TLS name the configuration serves."""
        nginx = self.user.nginx
        return make_tls(self.name, self.server_name,
                        names=nginx.server_names if nginx is not None else ())

    def ca_pem(self) -> bytes:
        """The lab's CA certificate (made by this process, or read from the nginx node)."""
        if self._tls is not None:
            return self._tls.ca_pem
        if self._ca is None:
            result = self.exec("nginx", ["cat", "/etc/lab/tls/ca.crt"])
            if result.exit_code != 0:
                raise LabError(f"cannot read the lab CA from nginx: {result.output.strip()}")
            self._ca = result.output.encode()
        return self._ca

    def _redirect(self, path: str) -> str | None:
        """Port 80's redirect of ``path`` to HTTPS in the running configuration, if any.

        The lab's rendered nginx.conf never redirects; any other is read once from NGINX
        (``nginx -T``), else from the user's files as copied when NGINX cannot be asked."""
        if self.config.nginx.conf is None and self._nginx_conf is None:
            return None
        if self._policy is None:
            try:
                self._policy = self._running()
            except LabError:
                nginx = self.user.nginx
                return nginx.redirect if nginx is not None and path == "/" else None
        tree, policy = self._policy
        plain, tls = self.site_ports
        target = plain_http_redirect(policy, tree, path, plain or 80, host=self.server_name)
        https = tls is not None and policy.https_port() == tls
        return target if target is not None and target.startswith("https://") and https \
            else None

    @property
    def site_ports(self) -> tuple[int | None, int | None]:
        """NGINX's plain-HTTP and TLS ports the clients use (80 and 443, or a user site's own:
        ``UserNginx.plain_port``/``tls_port``)."""
        nginx = self.user.nginx
        return (nginx.plain_port, nginx.tls_port) if nginx is not None else (80, 443)

    def client_target(self, path: str = "/") -> ClientTarget:
        """Where the lab's clients send a request for ``path``: NGINX's published plain port
        (80), or, when the running configuration redirects it to HTTPS
        (``NginxPolicy.redirects``) or serves HTTPS only, the published TLS port as the TLS
        server's name, verified with the lab's CA, as a browser following the redirect would."""
        plain, tls = self.site_ports
        follows = self._redirect(path) if plain is not None else None
        if plain is not None and follows is None:
            return ClientTarget(f"http://127.0.0.1:{self._port('nginx', f'{plain}/tcp')}")
        return ClientTarget(f"https://127.0.0.1:{self._port('nginx', f'{tls}/tcp')}",
                            self.server_name, self.ca_pem(), follows)

    @property
    def user(self) -> UserTopology:
        """The user's own files and backend in this configuration (read once, checked)."""
        if self._user is None:
            self._user = user_topology(self.config)
        return self._user

    @property
    def backend_port(self) -> int:
        """The port every backend listens on (the upstream's, for a user's nginx.conf)."""
        return self.user.backend_port

    def exposure(self) -> list[NodeExposure]:
        """What every container of this lab (nodes and helpers) publishes on the host, per
        Docker."""
        now = time.time()
        return [NodeExposure(now, info.node if info.labels.get(LABEL_KIND) == "node" else info.name,
                             info.role if info.labels.get(LABEL_KIND) == "node" else "",
                             info.status, info.network_mode,
                             tuple(PortBinding(b.container_port, b.host_ip, b.host_port)
                                   for b in info.bindings))
                for info in self.engine.list_containers({LABEL_LAB: self.name})]

    def addresses(self) -> dict[str, str]:
        """Container address -> node name, to read NGINX's $upstream_addr (never a target)."""
        # One listing call holds every address: no inspect per container (a run asks twice).
        states = self.engine.container_states({LABEL_LAB: self.name, LABEL_KIND: "node"})
        return {info.ip_address: info.node for info in states if info.ip_address}

    # -- endpoints and readiness ----------------------------------------------------------

    def _port(self, node: str, container_port: str) -> int:
        info = self.inspect(node)
        if info is None or container_port not in info.published:
            raise LabError(
                f"{node} publishes no port {container_port} (is lab {self.name} running?)")
        return info.published[container_port][1]

    def _dsn(self, node: str, container_port: str, user: str, password: str, database: str) -> str:
        return (f"postgresql://{user}:{password}@127.0.0.1:"
                f"{self._port(node, container_port)}/{database}")

    @property
    def endpoints(self) -> Endpoints:
        pg, s = self.config.postgres, self.secrets
        pgbouncer_port = f"{PGBOUNCER_PORT}/tcp"
        plain, tls = self.site_ports
        https = f"https://127.0.0.1:{self._port('nginx', f'{tls}/tcp')}" if tls else ""
        return Endpoints(
            # A site that serves HTTPS only has no plain endpoint: its HTTPS one stands in.
            nginx_http=f"http://127.0.0.1:{self._port('nginx', f'{plain}/tcp')}" if plain
            else https,
            nginx_https=https,
            postgres_dsn=self._dsn("postgres", "5432/tcp", pg.user, s.db_password, pg.database),
            pgbouncer_dsn=self._dsn("pgbouncer", pgbouncer_port, pg.user, s.db_password,
                                    pg.database),
            pgbouncer_admin_dsn=self._dsn("pgbouncer", pgbouncer_port, PGBOUNCER_ADMIN_USER,
                                          s.pgbouncer_admin_password, "pgbouncer"),
            redis_url=f"redis://127.0.0.1:{self._port('redis', '6379/tcp')}/0",
        )

    def probe(self, node: str, *, wait_s: float = 0.0) -> Probe:
        """The readiness question for a node; it needs only that node's published port.

        ``wait_s``: a backend's probe keeps asking inside the container for up to that long
        (one ``docker exec`` while it starts, instead of one per try)."""
        role = self.roles.get(node)
        if role is None:
            self.container(node)  # raises UnknownNode
        pg, s = self.config.postgres, self.secrets
        if role == "postgres":
            return SqlProbe(self._dsn("postgres", "5432/tcp", pg.user, s.db_password, pg.database))
        if role == "pgbouncer":
            return SqlProbe(self._dsn("pgbouncer", f"{PGBOUNCER_PORT}/tcp", pg.user,
                                      s.db_password, pg.database))
        if role == "redis":
            return RedisProbe(f"redis://127.0.0.1:{self._port('redis', '6379/tcp')}/0")
        contract = self.config.backend.contract
        if role == "backend" and contract is not None:
            command = health_command(self.config, self.backend_port, contract.health.ready)
            return ExecProbe(lambda cmd, n=node: self.exec(n, cmd), command)
        if role == "backend":
            waiting = ("--wait", f"{wait_s:g}") if wait_s > 0 else ()
            return ExecProbe(lambda cmd, n=node: self.exec(n, cmd),
                             ("lab-probe", *waiting, "/health/ready"))
        served, turn = served_by(self._user_pool(), self.config.backend_names)
        if contract is not None:
            return ThroughNginxProbe(self.client_target(contract.health.ready),
                                     served, contract.health.ready,
                                     identified=contract.node_id_env is not None, turn=turn)
        return ThroughNginxProbe(self.client_target("/health/ready"), served,
                                 keyed=self._keyed_pool(), turn=turn)

    def _user_pool(self) -> UpstreamPolicy | None:
        """The user's backend pool as NGINX will run it (from the file: no exec)."""
        nginx = self.user.nginx
        if nginx is None:
            return None
        return policy_from_tree(nginx.tree, nodes=dict(nginx.nodes),
                                upstream=self.config.nginx.upstream).upstream

    def _client_gateway(
        self,
    ) -> Callable[[ipaddress.IPv4Network], ipaddress.IPv4Address | None] | None:
        """For a pool balanced on the client address: the gateway (the address every lab
        client reaches NGINX from) that NGINX's hash sends to backend-1, the backend the
        shipped scenarios break; otherwise None (the subnet's first address)."""
        pool = self._user_pool()
        if pool is None or not nginx_hash.steerable(pool) or not self.config.backend_names:
            return None
        target = self.config.backend_names[0]

        def choose(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address | None:
            taken = {node_address(self.config, subnet, n) for n in self.roles}
            candidates = (subnet[i] for i in range(1, FIRST_CLIENT_ADDRESS)
                          if str(subnet[i]) not in taken)
            return nginx_hash.gateway_for(pool, candidates, target)
        return choose

    def _say_client_address(self, gateway: ipaddress.IPv4Address,
                            say: Callable[[str], None]) -> None:
        pool = self._user_pool()
        if pool is None or not nginx_hash.steerable(pool):
            return
        method = "ip_hash" if pool.balancing == "ip_hash" else \
            f"hash {pool.hash_key}{' consistent' * pool.hash_consistent}"
        chosen = nginx_hash.first_choice(pool, gateway)
        if chosen == self.config.backend_names[0]:
            say(f"your clients reach NGINX from {gateway}: {method} sends that address to "
                f"{chosen}, the backend the shipped scenarios break")
        else:
            say(f"your clients reach NGINX from {gateway}: {method} sends all of them to "
                f"{chosen or 'a backend the lab cannot tell'}; no address of the lab's "
                f"networks goes to {self.config.backend_names[0]}")

    def _keyed_pool(self) -> bool:
        """Whether the user's pool balances by hash or ip_hash (from the file: no exec)."""
        pool = self._user_pool()
        return pool is not None and pool.balancing in ("hash", "ip_hash")

    def wait_ready(self, node: str, timeout_s: float = READY_TIMEOUT_S) -> ProbeResult:
        """Wait for one node; a node that does not get ready is a ``NodeStartError``."""
        result = wait_until_ready(self.probe(node), timeout_s)
        if not result.ok:
            raise self._start_error(node, result)
        return result

    def _start_error(self, node: str, result: ProbeResult) -> NodeStartError:
        """One sentence (what was asked, what came back), a few distinct log lines, a hint."""
        info = self.inspect(node)
        state = info.status if info else "missing"
        whole = f"`docker logs {container_name(self.name, node)}` shows the whole log"
        return NodeStartError(
            f"{node} did not become ready ({state}): {result.detail}",
            details=f"last log lines of {node}:\n" + log_excerpt(self.logs(node, tail=50)),
            hint=f"{result.hint}; {whole}" if result.hint else whole,
        )

    # -- lifecycle ------------------------------------------------------------------------

    def _complete_and_running(self) -> bool:
        states = {info.node: info.status for info in self._summaries()}
        return set(states) == set(self.roles) and all(s == "running" for s in states.values())

    def _summaries(self) -> list[ContainerSummary]:
        return self.engine.container_summaries({LABEL_LAB: self.name, LABEL_KIND: "node"})

    def up(
        self,
        *,
        say: Callable[[str], None] = lambda text: None,
        on_build: Callable[[str, str], None] = lambda role, line: None,
        ephemeral: bool = False,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> UpResult:
        """Start the lab and return when every node is ready; a running lab is left as it is."""
        recorder = TimelineRecorder()
        with recorder.phase("orphans"):
            leftovers = remove_orphans(self.engine)
            exists = self.exists()
        if exists:
            if self._complete_and_running():
                attached = Lab.attach(self.engine, self.name)
                self.config, self.secrets = attached.config, attached.secrets
                return UpResult(True, recorder.now(), (), leftovers)
            say(f"lab {self.name!r} is incomplete (a crashed run?): removing its leftovers")
            removed = self.down()
            leftovers = Removed(leftovers.containers + removed.containers,
                                leftovers.networks + removed.networks,
                                leftovers.volumes + removed.volumes)
        user = self.user  # the user's files are refused here, before anything is created
        for note in user.notes:
            say(f"your files: {note}")
        with recorder.phase("images"):
            refs = image_builder.ensure_images(self.engine, self.config.build, say=say,
                                               on_progress=on_build)
        images = {role: ref.reference for role, ref in refs.items()}
        built = tuple(role for role, ref in refs.items() if ref.built)
        if user.user_backend:
            images["backend"] = ensure_user_backend(self.engine, self.config, say=say)
        if user.nginx is not None:
            check_nginx(self.engine, self.name, images["nginx"], user.nginx, self.make_tls(),
                        {LABEL_OWNER: owner_id()})
        try:
            self._create_and_start(images, say=say, ephemeral=ephemeral, recorder=recorder,
                                   timeout_s=ready_timeout_s)
        except BaseException:
            # Nothing half-started survives a failure or Ctrl-C.
            self.down()
            raise
        return UpResult(False, recorder.now(), built, leftovers, recorder.result(self.roles))

    def _create_and_start(self, images: dict[str, str], *, say: Callable[[str], None],
                          ephemeral: bool, recorder: TimelineRecorder, timeout_s: float) -> None:
        owner = owner_id()
        labels = {LABEL_LAB: self.name, LABEL_KIND: "network", LABEL_OWNER: owner,
                  LABEL_CONFIG: self.config.model_dump_json(),
                  LABEL_SECRETS: json.dumps(self.secrets.__dict__)}
        if ephemeral:
            labels[LABEL_EPHEMERAL] = "1"
        with ThreadPoolExecutor(max_workers=1) as side:
            # The certificates need no network: made while Docker creates it.
            network = side.submit(self._timed, recorder, "network", self.engine.create_network,
                                  network_name(self.name), labels, self._client_gateway())
            with recorder.phase("tls"):
                tls = self._tls = self.make_tls()
            subnet, gateway = network.result()
        self._say_client_address(gateway, say)
        nodes = plan(self.config, self.secrets, tls, images, subnet, nginx_conf=self._nginx_conf,
                     extra_publish=self._extra_publish, user=self.user,
                     extra_env=self._extra_env,
                     extra_labels={k: v for k, v in labels.items()
                                   if k in (LABEL_OWNER, LABEL_EPHEMERAL)})
        gate = FileSpec(START_GATE_FILE, b"the lab signals this container once its dependencies "
                        b"answer (lab/topology/plan.py GATED)\n")
        def gated(node: NodePlan) -> NodePlan:
            spec = dataclasses.replace(node.spec, files=(*node.spec.files, gate))
            return dataclasses.replace(node, spec=spec)

        nodes = [gated(n) if n.role in GATED else n for n in nodes]
        say(f"starting {', '.join(n.name for n in nodes)}")
        self._bring_up(nodes, recorder, timeout_s)

    @staticmethod
    def _timed(recorder: TimelineRecorder, name: str, fn: Callable, *args: object) -> object:
        with recorder.phase(name):
            return fn(*args)

    def _bring_up(self, nodes: list[NodePlan] | None, recorder: TimelineRecorder | None,
                  timeout_s: float) -> None:
        """Create and start ``nodes`` (None: every node is already running) and wait until each
        is ready, each node as soon as ``START_AFTER``, ``GATED`` and ``PROBE_AFTER`` allow.

        One thread per node. A failure anywhere stops the others (nothing waits for a node that
        will not come), and the first failed node in dependency order is raised: a dead
        database explains the rest."""
        deadline = time.monotonic() + timeout_s
        progress = _Progress(self.roles)
        plans = {n.name: n for n in nodes} if nodes is not None else {}
        mark = recorder.mark if recorder is not None else (lambda node, event: None)

        def one(node: str) -> ProbeResult | None:
            """The node's readiness; None when it was stopped before it could finish."""
            role = self.roles[node]
            try:
                if node in plans:
                    self.engine.create_container(plans[node].spec)
                    mark(node, "created")
                    if not progress.wait_for(START_AFTER.get(role, ()), deadline):
                        return None
                    self.engine.start(plans[node].spec.name)
                mark(node, "started")
                progress.reached(node, "started")
                gate = node in plans and role in GATED
                if gate and not progress.wait_for(GATED[role], deadline):
                    return None
                if not progress.wait_for(PROBE_AFTER.get(role, ()), deadline):
                    return None
                mark(node, "probing")
                # While the lab starts, a backend is asked from inside its container every 20 ms
                # by one exec; waits elsewhere (scenario steps) keep their probe as it was.
                probe = self.probe(node, wait_s=EXEC_PROBE_WAIT_S if plans else 0.0)
                remaining = min(deadline - time.monotonic(), self._ready_timeout(node, timeout_s))

                def before_probe() -> None:
                    if recorder is not None:
                        recorder.probed(node)
                    if gate:
                        # Until it answers: a signal can arrive before the entrypoint's trap.
                        self._signal_gate(plans[node].spec.name)

                result = wait_until_ready(probe, max(0.0, remaining), abort=progress.abort,
                                          on_probe=before_probe)
            except BaseException:
                progress.stop()
                raise
            if result.ok:
                mark(node, "ready")
                progress.reached(node, "ready")
                return result
            if progress.abort.is_set():
                return None  # interrupted because another node failed: not this node's fault
            progress.stop()
            return result

        with ThreadPoolExecutor(max_workers=len(self.roles)) as pool:
            futures = {node: pool.submit(one, node) for node in self.roles}
            try:
                for future in futures.values():
                    future.exception()  # waits; Ctrl-C here stops every thread below
            except BaseException:
                progress.stop()
                raise
        for node, future in futures.items():
            error = future.exception()
            if error is not None:
                raise error
            result = future.result()
            if result is not None and not result.ok:
                raise self._start_error(node, result)
        waiting = [node for node in self.roles if not progress.is_ready(node)]
        if waiting:
            raise self._start_error(waiting[0], ProbeResult(
                False, f"still waiting for the nodes it depends on after {timeout_s:g} s"))

    def _signal_gate(self, container: str) -> None:
        try:
            self.engine.kill(container, START_GATE_SIGNAL)
        except LabError:
            pass  # not running (yet, or any more): the probe says what that means

    def wait_all_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait for every node; NGINX last. A node that does not get ready raises NodeStartError."""
        # Traffic through NGINX before the backends listen would be refused, counted by the
        # passive checks, and eject every backend for fail_timeout: NGINX is probed only once
        # every backend answered directly (PROBE_AFTER).
        self._bring_up(None, None, timeout_s)

    def _ready_timeout(self, node: str, timeout_s: float) -> float:
        # A user's backend says in its contract how long it may take to answer.
        contract = self.config.backend.contract
        if contract is not None and self.roles.get(node) == "backend":
            return min(timeout_s, contract.ready_timeout_s)
        return timeout_s

    def down(self) -> Removed:
        """Remove every container, network and volume of this lab (by label; idempotent)."""
        return self.engine.remove_labelled({LABEL_LAB: self.name})

    def status(self) -> LabStatus:
        """Per node: role, state, readiness, published addresses, uptime."""
        infos = {info.node: info for info in self._containers()}
        if not infos and not self.engine.network_exists(network_name(self.name)):
            raise LabNotFound(f"no lab named {self.name!r} is running",
                              hint=f"start it with `lab up --name {self.name}`")
        try:
            endpoints: Endpoints | None = self.endpoints
        except LabError:
            endpoints = None
        now = datetime.now(UTC)

        def one(node: str) -> NodeStatus:
            info = infos.get(node)
            if info is None:
                return NodeStatus(node, self.roles[node], "missing", False, "no container", (),
                                  None)
            published = tuple(f"{ip}:{port}->{cport}"
                              for cport, (ip, port) in sorted(info.published.items()))
            if info.status != "running" or endpoints is None:
                return NodeStatus(node, info.role, info.status, False, info.status, published, None)
            result = self.probe(node).check()
            uptime = (now - info.started_at).total_seconds() if info.started_at else None
            return NodeStatus(node, info.role, info.status, result.ok, result.detail, published,
                              uptime)

        with ThreadPoolExecutor(max_workers=len(self.roles)) as pool:
            nodes = tuple(pool.map(one, self.roles))
        return LabStatus(self.name, nodes, endpoints)


_LOG_LINES = 6
_LOG_NOISE = re.compile(r"^\S*\s*\d{4}/\d\d/\d\d \d\d:\d\d:\d\d |\d+#\d+: \*?\d+ ?|"
                        r"\b\d+\.\d+\.\d+\.\d+:\d+\b")


def log_excerpt(text: str, limit: int = _LOG_LINES) -> str:
    """A node's last log lines as a reader needs them: NGINX's access-log lines summarised
    (the lab logs every request; twenty identical probes are one fact), other lines once
    each, with how often they came, at most ``limit`` of them, the latest last."""
    requests: dict[str, int] = {}
    others: dict[str, tuple[str, int]] = {}
    for line in text.splitlines():
        if ACCESS_LOG_TAG in line:
            try:
                entry = parse_access_log_line(line, {})
            except ValueError:
                continue
            if entry is not None:
                key = f"{entry.method} {entry.uri} -> {entry.status}"
                requests[key] = requests.pop(key, 0) + 1
            continue
        if not line.strip():
            continue
        # The same message differs only in its time, connection number and client port.
        key = _LOG_NOISE.sub("", line).strip()
        count = others.pop(key, ("", 0))[1]
        others[key] = (line.rstrip(), count + 1)
    shown = [f"  {line}" + (f"  (x{count})" if count > 1 else "")
             for line, count in list(others.values())[-limit:]]
    if requests:
        shown.append("  access log: " + "; ".join(
            f"{key} (x{count})" if count > 1 else key for key, count in
            list(requests.items())[-3:]))
    return "\n".join(shown) or "  (none)"


class _Progress:
    """How far each node of one `up` got, for the threads that wait on each other."""

    def __init__(self, roles: Mapping[str, str]):
        self.roles = dict(roles)
        self.abort = threading.Event()
        self._reached: dict[str, set[str]] = {node: set() for node in roles}
        self._changed = threading.Condition()

    def reached(self, node: str, event: str) -> None:
        with self._changed:
            self._reached[node].add(event)
            self._changed.notify_all()

    def is_ready(self, node: str) -> bool:
        with self._changed:
            return "ready" in self._reached[node]

    def stop(self) -> None:
        """Release every waiting thread: a node failed, or the user pressed Ctrl-C."""
        with self._changed:
            self.abort.set()
            self._changed.notify_all()

    def wait_for(self, needs: Iterable[tuple[str, str]], deadline: float) -> bool:
        """Block until every node of each needed role reached its event; False when stopped
        or past the deadline."""
        nodes = [(node, event) for role, event in needs
                 for node, node_role in self.roles.items() if node_role == role]

        def met() -> bool:
            return all(event in self._reached[node] for node, event in nodes)

        with self._changed:
            while not met():
                remaining = deadline - time.monotonic()
                if self.abort.is_set() or remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True


def remove_orphans(engine: Engine) -> Removed:
    """Remove what dead processes left: their sidecars, their ephemeral labs, and labs they
    left half-started. A complete lab started by `lab up` is never an orphan."""
    removed = Removed()
    # Two list requests answer everything below: this runs before every `lab up`.
    containers = engine.container_summaries({LABEL_LAB: None})
    networks = engine.labelled_networks(LABEL_LAB)
    by_lab: dict[str, list[ContainerSummary]] = {}
    for info in containers:
        by_lab.setdefault(info.labels.get(LABEL_LAB, ""), []).append(info)
    # A recorded fault outlives the process that injected it (`lab break` returns with the
    # fault in place); its sidecar is what heals it, so it is no orphan.
    needed = {info.labels.get(LABEL_FAULT_SIDECAR) for info in containers
              if info.labels.get(LABEL_KIND) == FAULT_RECORD_KIND}
    for info in containers:
        if (info.labels.get(LABEL_KIND) == "sidecar" and info.name not in needed
                and not _owner_alive(info.labels.get(LABEL_OWNER, ""))):
            engine.remove_container(info.id)
            removed = Removed(removed.containers + (info.name,), removed.networks, removed.volumes)
    names = {n for n in by_lab if n} | {labels.get(LABEL_LAB, "") for labels in networks.values()}
    for name in sorted(n for n in names if n):
        labels = networks.get(network_name(name), {})
        members = by_lab.get(name, [])
        owner = labels.get(LABEL_OWNER) or next((m.labels.get(LABEL_OWNER, "") for m in members),
                                                "")
        if _owner_alive(owner):
            continue
        ephemeral = labels.get(LABEL_EPHEMERAL) == "1" or any(
            m.labels.get(LABEL_EPHEMERAL) == "1" for m in members)
        complete = LABEL_CONFIG in labels and _complete(labels, members)
        if ephemeral or not complete:
            result = engine.remove_labelled({LABEL_LAB: name})
            removed = Removed(removed.containers + result.containers,
                              removed.networks + result.networks,
                              removed.volumes + result.volumes)
    return removed


def _complete(network_labels: Mapping[str, str], members: Iterable[ContainerSummary]) -> bool:
    try:
        config = parse_config(json.loads(network_labels[LABEL_CONFIG]), source="lab labels")
    except (ConfigError, ValueError):
        # Another version of the lab made it (a field this one does not know): it cannot be
        # judged here, so it is kept, and one unreadable lab never stops every `lab up`.
        return True
    nodes = {m.node for m in members if m.labels.get(LABEL_KIND) == "node"}
    return nodes == set(node_roles(config))


def down_all(engine: Engine) -> Removed:
    """Remove every lab on this engine, and every sidecar."""
    return engine.remove_labelled({LABEL_LAB: None})
