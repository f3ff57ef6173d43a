"""The one module that speaks to the Docker SDK.

Everything else in the lab works with the typed records below (``ContainerSpec``,
``ContainerInfo``, ``ExecResult``) and the ``LabError`` tree; Docker's own exceptions are
translated here, once, at the boundary. Every resource the lab creates carries the
``LABEL_LAB`` label so that leftovers of a crashed run can be found and removed.
"""

from __future__ import annotations

import io
import ipaddress
import itertools
import json
import math
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import docker
import docker.errors
from docker.types import IPAMConfig, IPAMPool

from lab.errors import DockerUnavailable, ImageBuildError, LabError, PortConflict

LABEL_PREFIX = "io.failover-lab"
LABEL_LAB = f"{LABEL_PREFIX}.lab"            # the lab's name, on every resource
LABEL_ROLE = f"{LABEL_PREFIX}.role"          # node role (postgres, backend, ...)
LABEL_NODE = f"{LABEL_PREFIX}.node"          # node name (backend-2, ...)
LABEL_KIND = f"{LABEL_PREFIX}.kind"          # node | sidecar | network | volume
LABEL_IMAGE = f"{LABEL_PREFIX}.image"        # on images: the role they serve
LABEL_INPUTS = f"{LABEL_PREFIX}.inputs"      # on images: content hash of the build inputs
LABEL_CONFIG = f"{LABEL_PREFIX}.config"      # on a lab's network: its configuration (JSON)

# Subnets the lab picks its networks from: static addresses survive a container restart,
# which NGINX needs because it resolves upstream names only once, at start.
_SUBNET_POOL = ipaddress.ip_network("172.29.0.0/16")


@dataclass(frozen=True)
class FileSpec:
    """A file copied into a container before it starts."""

    path: str
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class ContainerSpec:
    """What to create: the lab's typed form of ``docker create`` arguments."""

    name: str
    image: str
    labels: Mapping[str, str]
    network: str | None = None
    ipv4_address: str | None = None
    aliases: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    command: tuple[str, ...] | None = None
    # container port ("80/tcp") -> host port on 127.0.0.1 (0 = ephemeral)
    publish: Mapping[str, int] = field(default_factory=dict)
    files: tuple[FileSpec, ...] = ()
    stop_timeout_s: int = 10
    network_mode: str | None = None
    cap_add: tuple[str, ...] = ()
    tmpfs: Mapping[str, str] = field(default_factory=dict)
    mem_limit: str | None = None
    # host name -> address written to the container's /etc/hosts (``--add-host``)
    extra_hosts: Mapping[str, str] = field(default_factory=dict)
    # Host path -> (container path, read-only): a load generator reads its script and writes
    # its results in the run directory (the engine is local, like the published ports).
    binds: Mapping[str, tuple[str, bool]] = field(default_factory=dict)
    # CFS weight against the other containers when the CPU is contended (Docker's default 1024).
    cpu_shares: int | None = None


@dataclass(frozen=True)
class HostBinding:
    """One host port Docker forwards to a container port, as Docker reports it."""

    container_port: str         # "80/tcp"
    host_ip: str                # "0.0.0.0" or "::" is every interface
    host_port: int              # 0: not assigned yet (a container that is not running)


# The kernel's bounds on a CFS quota and its period (cgroup v1 cpu.cfs_quota_us and
# cpu.cfs_period_us; cgroup v2 cpu.max alike).
MIN_CPU_QUOTA_US = 1_000
MAX_CPU_PERIOD_US = 1_000_000


@dataclass(frozen=True)
class CpuLimit:
    """A container's CFS quota as Docker holds it (``quota_us`` -1 or 0: unlimited)."""

    period_us: int
    quota_us: int
    nano_cpus: int = 0

    @property
    def cpus(self) -> float | None:
        """The limit in cores; None when unlimited."""
        if self.nano_cpus:
            return self.nano_cpus / 1e9
        if self.quota_us > 0 and self.period_us > 0:
            return self.quota_us / self.period_us
        return None


@dataclass(frozen=True)
class ContainerStats:
    """One reading of Docker's stats stream for a container (cumulative counters)."""

    at: float                   # when Docker read it, epoch seconds
    cpu_s: float                # CPU time since the container started
    memory_bytes: int           # usage less the inactive page cache, as `docker stats` shows
    throttled_periods: int      # CFS periods in which the quota ran out
    periods: int                # CFS periods with a quota in force


@dataclass(frozen=True)
class ContainerSummary:
    """A container as Docker's list answers it, without an inspect per container."""

    id: str
    name: str
    status: str                      # created, running, paused, exited, dead, ...
    labels: Mapping[str, str]

    @property
    def node(self) -> str:
        return self.labels.get(LABEL_NODE, self.name)

    @property
    def role(self) -> str:
        return self.labels.get(LABEL_ROLE, "")


@dataclass(frozen=True)
class ContainerInfo(ContainerSummary):
    """What Docker's inspect says about one container, reduced to what the lab reads."""

    started_at: datetime | None
    ip_address: str | None
    published: Mapping[str, tuple[str, int]]   # "80/tcp" -> ("127.0.0.1", 49153)
    env: Mapping[str, str]
    exit_code: int | None
    # Every binding, IPv6 and every-interface ones included (``published`` keeps one per port).
    bindings: tuple[HostBinding, ...] = ()
    network_mode: str = ""           # HostConfig.NetworkMode: a network, "host", "container:<id>"
    image: str = ""                  # the image reference it was created from


class ExecResult(NamedTuple):
    """A command's exit code and combined output (unpacks as ``code, output``)."""

    exit_code: int
    output: str


@dataclass(frozen=True)
class Removed:
    """What a cleanup removed, by kind."""

    containers: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.containers or self.networks or self.volumes)


def _parse_time(value: str | None) -> datetime | None:
    """Docker's RFC 3339 UTC time (nanoseconds, ``Z``); None for the zero time."""
    if not value or value.startswith("0001-"):
        return None
    whole, _, fraction = value.rstrip("Z").partition(".")
    return datetime.fromisoformat(
        f"{whole}.{(fraction[:6] or '0').ljust(6, '0')}").replace(tzinfo=UTC)


def _container_stats(raw: Mapping) -> ContainerStats | None:
    """One stats-API document as a sample; None for the empty one a stopped container sends."""
    cpu = raw.get("cpu_stats") or {}
    usage = (cpu.get("cpu_usage") or {}).get("total_usage")
    read = _parse_time(raw.get("read"))
    if usage is None or read is None:
        return None
    memory = raw.get("memory_stats") or {}
    stats = memory.get("stats") or {}
    # What `docker stats` shows: usage less the page cache (cgroup v1 total_inactive_file,
    # v2 inactive_file), which the kernel can take back at once.
    cache = stats.get("total_inactive_file", stats.get("inactive_file", 0))
    throttling = cpu.get("throttling_data") or {}
    return ContainerStats(
        at=read.timestamp(), cpu_s=usage / 1e9,
        memory_bytes=max(0, int(memory.get("usage") or 0) - int(cache or 0)),
        throttled_periods=int(throttling.get("throttled_periods") or 0),
        periods=int(throttling.get("periods") or 0))


def _tar(files: Iterable[FileSpec]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for spec in files:
            info = tarfile.TarInfo(spec.path.lstrip("/"))
            info.size = len(spec.content)
            info.mode = spec.mode
            archive.addfile(info, io.BytesIO(spec.content))
    return buffer.getvalue()


class Engine:
    """A Docker engine, seen through the operations the lab needs."""

    def __init__(self, client: docker.DockerClient):
        self._client = client

    @classmethod
    def connect(cls, timeout_s: float = 10) -> Engine:
        """Connect to the engine named by the environment (DOCKER_HOST) or the default socket."""
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        try:
            client = docker.from_env(timeout=int(timeout_s))
            client.ping()
        except (docker.errors.DockerException, OSError) as exc:
            raise DockerUnavailable(
                f"no Docker engine answers at {where} ({type(exc).__name__})",
                hint="start one (`sudo systemctl start docker`, or `dockerd &` as root), "
                "or point DOCKER_HOST at a running engine",
            ) from None
        return cls(client)

    def close(self) -> None:
        self._client.close()

    # -- images ---------------------------------------------------------------------------

    def image_labels(self, reference: str) -> Mapping[str, str] | None:
        """The labels of a local image, or None when it does not exist."""
        try:
            image = self._client.images.get(reference)
        except docker.errors.ImageNotFound:
            return None
        return image.labels or {}

    def image_id(self, reference: str) -> str | None:
        try:
            return self._client.images.get(reference).id
        except docker.errors.ImageNotFound:
            return None

    def image_size(self, reference: str) -> int:
        return int(self._client.images.get(reference).attrs.get("Size", 0))

    def pull(self, reference: str) -> bool:
        """Pull an image; False when no registry answers (air-gapped machines)."""
        repository, _, tag = reference.partition(":")
        try:
            self._client.images.pull(repository, tag=tag or "latest")
            return True
        except docker.errors.APIError:
            return False

    def import_rootfs(self, chunks: Iterator[bytes], reference: str,
                      labels: Mapping[str, str]) -> str:
        """``docker import`` a root filesystem tar stream as an image; returns its id."""
        repository, _, tag = reference.partition(":")
        changes = ['CMD ["/bin/bash"]'] + [f"LABEL {k}={json.dumps(v)}" for k, v in labels.items()]
        try:
            self._client.api.import_image_from_data(
                b"".join(chunks), repository=repository, tag=tag, changes=changes
            )
        except docker.errors.APIError as exc:
            raise ImageBuildError(
                f"docker import of {reference} failed: {exc.explanation}") from None
        return self.image_id(reference) or ""

    def build(
        self,
        context_tar: bytes,
        tag: str,
        *,
        buildargs: Mapping[str, str],
        labels: Mapping[str, str],
        on_line: Callable[[str], None] = lambda line: None,
        nocache: bool = False,
    ) -> str:
        """Build an image from an in-memory context (``nocache``: cold); errors carry the log."""
        log: list[str] = []
        step = ""
        failure: str | None = None
        try:
            stream = self._client.api.build(
                fileobj=io.BytesIO(context_tar), custom_context=True, tag=tag, rm=True,
                forcerm=True, buildargs=dict(buildargs), labels=dict(labels), decode=True,
                nocache=nocache,
            )
            # Read the stream to its end even after an error, so its connection is released.
            for chunk in stream:
                if "error" in chunk:
                    failure = failure or chunk["error"].strip()
                    continue
                line = chunk.get("stream", "").rstrip()
                if not line or failure:
                    continue
                if line.startswith("Step "):
                    step = line
                    log.clear()
                log.append(line)
                on_line(line)
        except docker.errors.APIError as exc:
            raise ImageBuildError(f"building {tag} failed: {exc.explanation}") from None
        if failure is not None:
            raise ImageBuildError(
                f"building {tag} failed at {step or 'the first step'}: {failure}",
                details="\n".join(log[-30:]),
                hint="the step's output is above; fix the Dockerfile or the network",
            )
        image_id = self.image_id(tag)
        if image_id is None:
            raise ImageBuildError(f"building {tag} produced no image", details="\n".join(log[-30:]))
        return image_id

    def tag(self, reference: str, new_reference: str) -> None:
        repository, _, tag = new_reference.partition(":")
        self._client.images.get(reference).tag(repository, tag or "latest")

    def remove_image(self, reference: str) -> None:
        try:
            self._client.images.remove(reference, force=True)
        except docker.errors.ImageNotFound:
            pass

    def list_images(self, label: str) -> list[tuple[str, tuple[str, ...], Mapping[str, str]]]:
        """(id, tags, labels) of local images that carry a label, in one request."""
        # The low-level list: the SDK's images.list() inspects every image once more.
        return [(i["Id"], tuple(t for t in i.get("RepoTags") or () if t != "<none>:<none>"),
                 i.get("Labels") or {})
                for i in self._client.api.images(filters={"label": label})]

    # -- networks -------------------------------------------------------------------------

    def _used_subnets(self) -> list[ipaddress.IPv4Network]:
        used = []
        for network in self._client.networks.list():
            for pool in (network.attrs.get("IPAM") or {}).get("Config") or []:
                subnet = pool.get("Subnet")
                if subnet and ":" not in subnet:
                    used.append(ipaddress.ip_network(subnet, strict=False))
        return used

    def create_network(
        self, name: str, labels: Mapping[str, str],
        gateway: Callable[[ipaddress.IPv4Network], ipaddress.IPv4Address | None] | None = None,
    ) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]:
        """A private bridge network with a subnet no other Docker network uses, and its
        gateway: the address the host's traffic to published ports comes from. ``gateway``
        picks it in a subnet (None: not in this one, try the next); without one, or when no
        free subnet suits it, the subnet's first address."""
        used = self._used_subnets()
        free = [c for c in _SUBNET_POOL.subnets(new_prefix=24)
                if not any(c.overlaps(other) for other in used)]
        chosen = ((c, g) for c in (free if gateway is not None else ())
                  for g in (gateway(c),) if g is not None)   # lazy: usually the first suits
        for candidate, address in itertools.chain(chosen, ((c, c[1]) for c in free)):
            ipam = IPAMConfig(pool_configs=[
                IPAMPool(subnet=str(candidate), gateway=str(address))])
            try:
                self._client.networks.create(name, driver="bridge", ipam=ipam, labels=dict(labels))
            except docker.errors.APIError as exc:
                if "overlap" in str(exc).lower():
                    continue  # another lab took it between our listing and our create
                raise LabError(f"cannot create network {name}: {exc.explanation}") from None
            return candidate, address
        raise LabError(f"no free /24 left in {_SUBNET_POOL} for network {name}",
                       hint="remove unused Docker networks (`docker network prune`)")

    def network_labels(self, name: str) -> Mapping[str, str] | None:
        try:
            return self._client.networks.get(name).attrs.get("Labels") or {}
        except docker.errors.NotFound:
            return None

    def network_exists(self, name: str) -> bool:
        return self.network_labels(name) is not None

    # -- containers -----------------------------------------------------------------------

    def create_container(self, spec: ContainerSpec) -> str:
        """Create (not start) a container and copy its files in; returns its id."""
        api = self._client.api
        host_config = api.create_host_config(
            port_bindings={port: ("127.0.0.1", host or None)
                           for port, host in spec.publish.items()},
            cap_add=list(spec.cap_add) or None, tmpfs=dict(spec.tmpfs) or None,
            mem_limit=spec.mem_limit, network_mode=spec.network_mode or spec.network,
            extra_hosts=dict(spec.extra_hosts) or None,
            binds={host: {"bind": path, "mode": "ro" if read_only else "rw"}
                   for host, (path, read_only) in spec.binds.items()} or None,
            cpu_shares=spec.cpu_shares,
        )
        networking = None
        if spec.network and not spec.network_mode:
            networking = api.create_networking_config({spec.network: api.create_endpoint_config(
                ipv4_address=spec.ipv4_address, aliases=list(spec.aliases) or None)})
        try:
            container_id = api.create_container(
                spec.image, name=spec.name, labels=dict(spec.labels), environment=dict(spec.env),
                command=list(spec.command) if spec.command is not None else None, detach=True,
                stop_timeout=spec.stop_timeout_s,  # image's own STOPSIGNAL (SIGINT for postgres)
                # (number, protocol): docker-py appends "/tcp" to a "8080/tcp" string, and a
                # port the image does not EXPOSE would then be bound to nothing.
                ports=[(port.partition("/")[0], port.partition("/")[2] or "tcp")
                       for port in spec.publish] or None,
                host_config=host_config, networking_config=networking,
            )["Id"]
            if spec.files:
                api.put_archive(container_id, "/", _tar(spec.files))
        except docker.errors.ImageNotFound:
            raise LabError(f"image {spec.image} is missing",
                           hint="run `lab images build`") from None
        except docker.errors.APIError as exc:
            raise LabError(f"cannot create container {spec.name}: {exc.explanation}") from None
        return container_id

    def start(self, name: str) -> None:
        try:
            self._client.api.start(name)
        except docker.errors.APIError as exc:
            text = str(exc.explanation or exc)
            if "port is already allocated" in text or "address already in use" in text:
                raise PortConflict(
                    f"{name}: a fixed published port is already in use ({text})",
                    hint="choose another port in [publish] of lab.toml, or 0 for an ephemeral one",
                ) from None
            raise LabError(f"cannot start {name}: {text}") from None

    def _call(self, action: str, name: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except docker.errors.NotFound:
            raise LabError(f"cannot {action} {name}: no such container") from None
        except docker.errors.APIError as exc:
            raise LabError(f"cannot {action} {name}: {exc.explanation}") from None

    def kill(self, name: str, signal: str = "SIGKILL") -> None:
        self._call("kill", name, lambda: self._client.api.kill(name, signal=signal))

    def stop(self, name: str, timeout_s: int | None = None) -> None:
        self._call("stop", name, lambda: self._client.api.stop(name, timeout=timeout_s))

    def pause(self, name: str) -> None:
        self._call("pause", name, lambda: self._client.api.pause(name))

    def unpause(self, name: str) -> None:
        self._call("unpause", name, lambda: self._client.api.unpause(name))

    def restart(self, name: str, timeout_s: int | None = None) -> None:
        self._call("restart", name, lambda: self._client.api.restart(name, timeout=timeout_s))

    def exec(self, name: str, command: list[str], *, user: str = "",
             detach: bool = False) -> ExecResult:
        """Run a command inside a running container (through the Docker API, not the network);
        ``detach`` leaves it running in the background and returns at once."""
        try:
            exec_id = self._client.api.exec_create(name, command, user=user)["Id"]
            if detach:
                self._client.api.exec_start(exec_id, detach=True)
                return ExecResult(0, "")
            output = self._client.api.exec_start(exec_id)
            exit_code = self._client.api.exec_inspect(exec_id)["ExitCode"]
        except docker.errors.APIError as exc:
            return ExecResult(exit_code=126, output=str(exc.explanation or exc))
        return ExecResult(exit_code=int(exit_code if exit_code is not None else 125),
                          output=output.decode(errors="replace"))

    def logs(self, name: str, *, tail: int | str = "all", since: float | None = None,
             stdout: bool = True, stderr: bool = True, timestamps: bool = False) -> str:
        """A container's output; with ``timestamps``, each line starts with Docker's RFC 3339
        time of it (when the daemon read it) and a space."""
        try:
            data = self._client.api.logs(name, stdout=stdout, stderr=stderr, tail=tail,
                                         since=since, timestamps=timestamps)
        except docker.errors.APIError:
            return ""
        return data.decode(errors="replace")

    def inspect(self, name: str) -> ContainerInfo | None:
        try:
            attrs = self._client.api.inspect_container(name)
        except docker.errors.NotFound:
            return None
        return self._info(attrs)

    @staticmethod
    def _info(attrs: Mapping) -> ContainerInfo:
        state = attrs.get("State") or {}
        settings = attrs.get("NetworkSettings") or {}
        ip = None
        for endpoint in (settings.get("Networks") or {}).values():
            ip = endpoint.get("IPAddress") or ip
        host_config = attrs.get("HostConfig") or {}
        published: dict[str, tuple[str, int]] = {}
        for port, bindings in (settings.get("Ports") or {}).items():
            for binding in bindings or []:
                if binding.get("HostPort"):
                    published[port] = (binding.get("HostIp") or "127.0.0.1",
                                       int(binding["HostPort"]))
        # A container that is not running forwards nothing yet; what it is configured to
        # publish is what it will expose when it starts, so that is what it reports then.
        ports = settings.get("Ports") if state.get("Running") else host_config.get("PortBindings")
        all_bindings = tuple(
            # An empty HostIp binds every interface (Docker's default for `-p 80:80`).
            HostBinding(port, binding.get("HostIp") or "0.0.0.0", int(binding.get("HostPort") or 0))
            for port, bindings in sorted((ports or {}).items()) for binding in bindings or [])
        env = {}
        for item in (attrs.get("Config") or {}).get("Env") or []:
            key, _, value = item.partition("=")
            env[key] = value
        return ContainerInfo(
            id=attrs["Id"], name=attrs["Name"].lstrip("/"),
            status=state.get("Status", "unknown"),
            labels=(attrs.get("Config") or {}).get("Labels") or {},
            started_at=_parse_time(state.get("StartedAt")) if state.get("Running") else None,
            ip_address=ip or None, published=published, env=env,
            exit_code=state.get("ExitCode"), bindings=all_bindings,
            network_mode=host_config.get("NetworkMode") or "",
            image=(attrs.get("Config") or {}).get("Image") or "",
        )

    def _listed(self, labels: Mapping[str, str | None]) -> list[dict]:
        """Docker's one listing call: containers in any state carrying every given label
        (value None: any value), as the API answers them."""
        filters = [k if v is None else f"{k}={v}" for k, v in labels.items()]
        try:
            return self._client.api.containers(all=True, filters={"label": filters})
        except docker.errors.APIError as exc:
            raise LabError(f"cannot list containers: {exc.explanation}") from None

    def list_containers(self, labels: Mapping[str, str | None]) -> list[ContainerInfo]:
        """Containers (any state) carrying every given label (value None: any value)."""
        summaries = self._listed(labels)
        infos = []
        for summary in summaries:
            info = self.inspect(summary["Id"])
            if info is not None:
                infos.append(info)
        return infos

    def container_states(self, labels: Mapping[str, str | None]) -> list[ContainerInfo]:
        """Like ``list_containers`` from the one listing call alone, for a view that polls:
        name, state, labels, address, published ports and image (no start time, environment,
        exit code or full bindings: those need an inspect per container)."""
        summaries = self._listed(labels)
        infos = []
        for summary in summaries:
            networks = (summary.get("NetworkSettings") or {}).get("Networks") or {}
            ip = next((n.get("IPAddress") for n in networks.values() if n.get("IPAddress")), None)
            published = {f"{p['PrivatePort']}/{p.get('Type', 'tcp')}": (p.get("IP") or "0.0.0.0",
                                                                          int(p["PublicPort"]))
                         for p in summary.get("Ports") or [] if p.get("PublicPort")}
            infos.append(ContainerInfo(
                id=summary["Id"], name=(summary.get("Names") or ["/"])[0].lstrip("/"),
                status=summary.get("State", "unknown"), labels=summary.get("Labels") or {},
                started_at=None, ip_address=ip, published=published, env={}, exit_code=None,
                network_mode=(summary.get("HostConfig") or {}).get("NetworkMode") or "",
                image=summary.get("Image") or ""))
        return infos

    def container_summaries(self, labels: Mapping[str, str | None]) -> list[ContainerSummary]:
        """Like ``list_containers`` from one list request: id, name, state and labels only."""
        summaries = self._listed(labels)
        return [ContainerSummary(s["Id"], (s.get("Names") or ["/" + s["Id"][:12]])[0].lstrip("/"),
                                 s.get("State", "unknown"), s.get("Labels") or {})
                for s in summaries]

    def run_sidecar(self, spec: ContainerSpec, *, timeout_s: float = 30) -> ExecResult:
        """Run a short-lived helper container to completion and remove it, whatever happens."""
        container_id = self.create_container(spec)
        try:
            self.start(container_id)
            result = self._client.api.wait(container_id, timeout=timeout_s)
            output = self.logs(container_id)
            return ExecResult(exit_code=int(result.get("StatusCode", 1)), output=output)
        except Exception as exc:  # noqa: BLE001 - reported as a failed run; removal below
            return ExecResult(exit_code=125, output=f"{type(exc).__name__}: {exc}")
        finally:
            self.remove_container(container_id)

    # -- resources ------------------------------------------------------------------------

    def cpu_limit(self, name: str) -> CpuLimit:
        """A container's CPU quota as Docker holds it."""
        try:
            host = self._client.api.inspect_container(name).get("HostConfig") or {}
        except docker.errors.NotFound:
            raise LabError(f"cannot read the CPU limit of {name}: no such container") from None
        return CpuLimit(int(host.get("CpuPeriod") or 0), int(host.get("CpuQuota") or 0),
                        int(host.get("NanoCpus") or 0))

    def set_cpu_limit(self, name: str, cpus: float | None,
                      period_us: int = 10_000) -> CpuLimit | None:
        """Limit a running container to ``cpus`` cores (a CFS quota per period); None lifts the
        limit. Returns the limit applied. A short period keeps a throttled node's pauses short
        (with Docker's 100 ms a quarter core may run 25 ms and then wait 75 ms, a latency of
        its own), but the kernel refuses a quota under 1 ms and Docker then raises it to 1 ms
        without a word: 0.02 of a core over 10 ms became a tenth. So below that the period
        grows until the quota is 1 ms (at most the kernel's 1 s period: 0.001 of a core)."""
        if cpus is None:
            self._call("update", name, lambda: self._client.api.update_container(
                name, cpu_period=period_us, cpu_quota=-1))
            return None
        period = min(MAX_CPU_PERIOD_US, max(period_us, math.ceil(MIN_CPU_QUOTA_US / cpus)))
        quota = max(MIN_CPU_QUOTA_US, round(cpus * period))
        self._call("update", name, lambda: self._client.api.update_container(
            name, cpu_period=period, cpu_quota=quota))
        return CpuLimit(period, quota)

    def restore_cpu_limit(self, name: str, limit: CpuLimit) -> None:
        """Put back a quota read with ``cpu_limit`` (NanoCpus limits are set at creation only)."""
        if limit.nano_cpus:
            return
        self._call("update", name, lambda: self._client.api.update_container(
            name, cpu_period=limit.period_us or 100_000, cpu_quota=limit.quota_us or -1))

    def stats_stream(self, name: str) -> Iterator[ContainerStats]:
        """Docker's stats stream for one container, one sample about every second, until the
        container goes or the caller stops iterating."""
        try:
            stream = self._client.api.stats(name, stream=True, decode=True)
            for raw in stream:
                sample = _container_stats(raw)
                if sample is not None:
                    yield sample
        except (docker.errors.APIError, OSError, ValueError):
            return

    def remove_container(self, name: str) -> bool:
        try:
            self._client.api.remove_container(name, force=True, v=True)
            return True
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as exc:
            if "already in progress" in str(exc):
                return True
            raise LabError(f"cannot remove {name}: {exc.explanation}") from None

    # -- cleanup by label -----------------------------------------------------------------

    def remove_labelled(self, labels: Mapping[str, str | None]) -> Removed:
        """Remove every container, network and volume with these labels (idempotent)."""
        filters = [k if v is None else f"{k}={v}" for k, v in labels.items()]
        summaries = self._client.api.containers(all=True, filters={"label": filters})
        # Side by side: Docker removes containers concurrently, one at a time took ~0.4 s each.
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(summaries)))) as pool:
            removed = list(pool.map(lambda s: self.remove_container(s["Id"]), summaries))
        containers = [s["Names"][0].lstrip("/") for s, gone in zip(summaries, removed) if gone]
        networks = []
        for network in self._client.networks.list(filters={"label": filters}):
            try:
                network.remove()
                networks.append(network.name)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                raise LabError(f"cannot remove network {network.name}: {exc.explanation}") from None
        volumes = []
        for volume in self._client.volumes.list(filters={"label": filters}):
            try:
                volume.remove(force=True)
                volumes.append(volume.name)
            except docker.errors.NotFound:
                pass
        return Removed(tuple(containers), tuple(networks), tuple(volumes))

    def labelled_networks(self, label: str) -> dict[str, Mapping[str, str]]:
        """Name -> labels of every network carrying ``label``, from one list request."""
        return {n["Name"]: n.get("Labels") or {}
                for n in self._client.api.networks(filters={"label": label})}

    def lab_names(self) -> set[str]:
        """Names of every lab that has any container or network on this engine."""
        names = {c["Labels"].get(LABEL_LAB) for c in
                 self._client.api.containers(all=True, filters={"label": LABEL_LAB})}
        names |= {n.attrs.get("Labels", {}).get(LABEL_LAB) for n in
                  self._client.networks.list(filters={"label": LABEL_LAB})}
        return {n for n in names if n}
