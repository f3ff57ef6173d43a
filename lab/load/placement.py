"""Where a load run's generator sends from and to, and the CPU each node is held to meanwhile.

Placement (``generator``):

- ``network`` (default): k6 runs in a container on the lab's network (the sidecar image with
  the k6 binary mounted read-only) and each VU sends from its own client address (k6
  ``--local-ips`` over addresses added to the container's interface), like the checklist's
  many users. NGINX keys ``limit_req`` on ``$binary_remote_addr``: from one address the api
  zone (100 r/s, no burst) rejects any request that arrives within 10 ms of the one before,
  so one address cannot load ``/api/`` at all (README, findings).
- ``host``: k6 on the host, through the published 127.0.0.1 port. Docker's userland proxy
  carries every request (its CPU is outside every quota) and NGINX sees one address, the
  network's gateway.

During the run every node is held to its role's CPU quota (``[load] cpus``), restored
afterwards whatever happens; a SIGKILLed run leaves them until the next ``lab load`` ends or
the lab is removed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from lab.config import LoadConfig
from lab.engine import CpuLimit
from lab.errors import LabError
from lab.topology.lab import Lab
from lab.topology.plan import FIRST_CLIENT_ADDRESS
from lab.topology.render import BACKEND_PORT

Placement = Literal["network", "host"]
# Every container has CFS weight 1024 and they share one cgroup: on a contended machine k6 in a
# container got less CPU than on the host (1,505 against 1,817 answers/s in one bench round).
# The nodes are held by their quotas; the generator may take what is left, first.
GENERATOR_CPU_SHARES = 8192


@dataclass(frozen=True)
class Target:
    """Where the generator's requests go: a node and its container port."""

    node: str = "nginx"
    port: int = 80


THROUGH_NGINX = Target()
BACKEND_DIRECT = Target("backend-1", BACKEND_PORT)


def client_addresses(lab: Lab, count: int) -> tuple[str, str]:
    """The first and last of ``count`` client addresses on the lab's /24 (network
    placement)."""
    info = lab.inspect("nginx")
    if info is None or info.ip_address is None:
        raise LabError(f"lab {lab.name}: NGINX has no address on the lab network")
    subnet = ipaddress.ip_network(f"{info.ip_address}/24", strict=False)
    return str(subnet[FIRST_CLIENT_ADDRESS]), str(subnet[FIRST_CLIENT_ADDRESS + count - 1])


def base_url(lab: Lab, generator: Placement, target: Target) -> str:
    """The URL the generator sends to: the target's name on the lab network, or its port
    published on the host."""
    if generator == "network":
        port = "" if target.port == 80 else f":{target.port}"
        return f"http://{target.node}{port}"
    info = lab.inspect(target.node)
    key = f"{target.port}/tcp"
    if info is None or key not in info.published:
        raise LabError(
            f"{target.node} publishes no port {key}: k6 on the host cannot reach it",
            hint="run the generator on the lab network (--from network)",
        )
    return f"http://127.0.0.1:{info.published[key][1]}"


def node_quotas(lab: Lab, settings: LoadConfig) -> dict[str, float | None]:
    """Node -> the CPU quota a load run holds it to (None: none)."""
    if not settings.quotas:
        return {node: None for node in lab.roles}
    return {node: settings.cpus.get(role) for node, role in lab.roles.items()}


def hold_quotas(lab: Lab, quotas: dict[str, float | None]) -> dict[str, CpuLimit]:
    """Hold each node to its CPU quota; returns what each had before, for ``restore_quotas``."""
    engine, before = lab.engine, {}
    try:
        for node, cpus in quotas.items():
            if cpus is None:
                continue
            container = lab.container(node)
            before[container] = engine.cpu_limit(container)
            engine.set_cpu_limit(container, cpus)
    except BaseException:
        restore_quotas(lab, before)
        raise
    return before


def restore_quotas(lab: Lab, before: dict[str, CpuLimit]) -> list[str]:
    """Put back the quotas ``hold_quotas`` replaced; the problems, one sentence each."""
    problems = []
    for container, limit in before.items():
        try:
            lab.engine.restore_cpu_limit(container, limit)
        except LabError as exc:
            problems.append(f"restoring the CPU quota of {container} failed: {exc}")
    return problems
