"""Network faults, applied from a sidecar that joins the target's network namespace.

The sidecar (image ``sidecar``: iproute2, iptables, the latency proxy) runs with NET_ADMIN in
``network_mode=container:<target>``, so node images need neither tools nor privileges. All
rules live in the lab's own chains (``LABFAULT*``) and the root qdisc of eth0, so healing is
one idempotent script; the sidecar is labelled, and a run that dies mid-fault leaves a
sidecar that the next run finds, uses to heal the target, and removes.

Latency: this kernel family may lack ``sch_netem``. The lab probes for it once; without it,
latency comes from ``lab-faultproxy`` (userspace): iptables REDIRECTs new TCP connections into
the target's port (or from the target to a peer) through a proxy that delays every chunk.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from functools import cache

from lab.engine import LABEL_KIND, LABEL_LAB, LABEL_NODE, ContainerSpec, Engine
from lab.errors import FaultError
from lab.faults.base import FaultSpec
from lab.topology import images as image_builder
from lab.topology.plan import container_name

LABEL_OWNER = "io.failover-lab.owner"
PROXY_PORT = 15001
PROXY_MARK = "0x1ab"

# Idempotent: removes every hook, chain, qdisc and proxy the lab may have added.
HEAL_SCRIPT = r"""
for table in filter nat; do
  for chain in LABFAULT_IN LABFAULT_OUT; do
    for hook in INPUT OUTPUT PREROUTING; do
      while iptables -t $table -D $hook -j $chain 2>/dev/null; do :; done
    done
    iptables -t $table -F $chain 2>/dev/null; iptables -t $table -X $chain 2>/dev/null
  done
done
tc qdisc del dev eth0 root 2>/dev/null
true
"""


def _chains(table: str) -> str:
    hooks = {"filter": ("INPUT", "OUTPUT"), "nat": ("PREROUTING", "OUTPUT")}[table]
    return (f"iptables -t {table} -N LABFAULT_IN && iptables -t {table} -I {hooks[0]} -j LABFAULT_IN && "
            f"iptables -t {table} -N LABFAULT_OUT && iptables -t {table} -I {hooks[1]} -j LABFAULT_OUT")


@dataclass
class Sidecar:
    """A helper container in a node's network namespace; removed by ``close``."""

    engine: Engine
    lab_name: str
    image: str
    target: str
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = f"lab-{self.lab_name}-fault-{self.target}-{uuid.uuid4().hex[:6]}"
        spec = ContainerSpec(
            name=self.name, image=self.image,
            labels={LABEL_LAB: self.lab_name, LABEL_KIND: "sidecar", LABEL_NODE: self.target,
                    LABEL_OWNER: f"{os.uname().nodename}:{os.getpid()}"},
            network_mode=f"container:{container_name(self.lab_name, self.target)}",
            cap_add=("NET_ADMIN",), command=("sleep", "infinity"), stop_timeout_s=1,
        )
        self.engine.create_container(spec)
        try:
            self.engine.start(self.name)
        except Exception:
            self.engine.remove_container(self.name)
            raise

    def sh(self, script: str, *, check: bool = True) -> str:
        result = self.engine.exec(self.name, ["sh", "-c", script])
        if check and result.exit_code != 0:
            raise FaultError(f"fault command failed in {self.target}'s network namespace "
                             f"(exit {result.exit_code}): {result.output.strip()[-400:]}")
        return result.output

    def background(self, command: list[str]) -> None:
        self.engine.exec(self.name, command, detach=True)

    def close(self) -> None:
        self.engine.remove_container(self.name)


def _sidecar_image(lab) -> str:
    refs = image_builder.ensure_images(lab.engine, lab.config.build, roles=("sidecar",))
    return refs["sidecar"].reference


@cache
def _netem_available(engine: Engine, image: str) -> bool:
    """Whether this kernel has sch_netem, probed once in a sidecar with its own empty netns."""
    spec = ContainerSpec(name=f"lab-netem-probe-{uuid.uuid4().hex[:6]}", image=image,
                         labels={LABEL_LAB: "netem-probe", LABEL_KIND: "sidecar"},
                         network_mode="none", cap_add=("NET_ADMIN",),
                         command=("tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"))
    return engine.run_sidecar(spec, timeout_s=30).exit_code == 0


@dataclass
class _NetworkFault:
    """Shared mechanics: a sidecar per injection, the heal script, peers as addresses."""

    spec: FaultSpec
    lab: object  # a Lab
    sidecar: Sidecar | None = None

    def _open(self) -> Sidecar:
        lab = self.lab
        if self.spec.target not in lab.roles:  # type: ignore[attr-defined]
            lab.container(self.spec.target)  # type: ignore[attr-defined] - raises UnknownNode
        self.sidecar = Sidecar(lab.engine, lab.name, _sidecar_image(lab), self.spec.target)  # type: ignore[attr-defined]
        self.sidecar.sh(HEAL_SCRIPT, check=False)  # start from a clean namespace
        return self.sidecar

    def _peer_addresses(self) -> list[str]:
        """The peers' addresses, or the whole lab subnet when the fault cuts every link."""
        by_node = {node: ip for ip, node in self.lab.addresses().items()}  # type: ignore[attr-defined]
        if not self.spec.peers:
            own = by_node.get(self.spec.target)
            if own is None:
                raise FaultError(f"{self.spec.target} has no address (is it running?)")
            return [own.rsplit(".", 1)[0] + ".0/24"]
        missing = [p for p in self.spec.peers if p not in by_node]
        if missing:
            raise FaultError(f"no address for {', '.join(missing)} (unknown or not running)")
        return [by_node[p] for p in self.spec.peers]

    def _filter_rules(self, action: str) -> str:
        lines = [_chains("filter")]
        for address in self._peer_addresses():
            if self.spec.direction in ("both", "in"):
                lines.append(f"iptables -A LABFAULT_IN -s {address} {action}")
            if self.spec.direction in ("both", "out"):
                lines.append(f"iptables -A LABFAULT_OUT -d {address} {action}")
        return " && ".join(lines)

    def heal(self) -> str:
        if self.sidecar is None:
            return "nothing to heal"
        try:
            self.sidecar.sh(HEAL_SCRIPT, check=False)
        finally:
            self.sidecar.close()
            self.sidecar = None
        return "rules removed, sidecar removed"

    def _inject(self, script: str, detail: str) -> str:
        sidecar = self._open()
        try:
            sidecar.sh(script)
        except BaseException:
            self.heal()
            raise
        return detail


class Partition(_NetworkFault):
    """Drop every packet between the target and its peers (all others by default)."""

    def inject(self) -> str:
        peers = ", ".join(self.spec.peers) or "all other nodes"
        return self._inject(self._filter_rules("-j DROP"), f"partitioned from {peers} ({self.spec.direction})")


class Loss(_NetworkFault):
    """Drop a random share of packets on the target's links."""

    def inject(self) -> str:
        if not 0 < self.spec.percent <= 100:
            raise FaultError(f"loss percent must be in (0, 100], got {self.spec.percent}")
        probability = self.spec.percent / 100
        rule = f"-m statistic --mode random --probability {probability:.4f} -j DROP"
        return self._inject(self._filter_rules(rule), f"{self.spec.percent:g}% packet loss ({self.spec.direction})")


class Throttle(_NetworkFault):
    """Limit the target's egress bandwidth with a token bucket (tc tbf)."""

    def inject(self) -> str:
        script = f"tc qdisc add dev eth0 root tbf rate {self.spec.rate} burst 32kbit latency 400ms"
        return self._inject(script, f"egress limited to {self.spec.rate} (tbf)")


class Latency(_NetworkFault):
    """Delay the target's traffic: netem where the kernel has it, else the userspace proxy."""

    def inject(self) -> str:
        s = self.spec
        if _netem_available(self.lab.engine, _sidecar_image(self.lab)):  # type: ignore[attr-defined]
            script = f"tc qdisc add dev eth0 root netem delay {s.delay_ms:g}ms {s.jitter_ms:g}ms"
            return self._inject(script, f"netem delay {s.delay_ms:g}±{s.jitter_ms:g} ms on egress")
        sidecar = self._open()
        try:
            sidecar.background(["python3", "/usr/local/bin/lab-faultproxy", "--listen", str(PROXY_PORT),
                                "--delay-ms", str(s.delay_ms), "--jitter-ms", str(s.jitter_ms),
                                "--mark", PROXY_MARK, "--seed", str(s.seed)])
            # Wait until the proxy listens, or connections would be redirected into nothing.
            sidecar.sh(f"for i in $(seq 50); do ss -ltn | grep -q ':{PROXY_PORT} ' && exit 0; sleep 0.1; done; exit 1")
            rules = [_chains("nat")]
            if s.peers:
                for address in self._peer_addresses():
                    rules.append(f"iptables -t nat -A LABFAULT_OUT -p tcp -d {address} -m mark ! --mark {PROXY_MARK} "
                                 f"-j REDIRECT --to-ports {PROXY_PORT}")
                where = f"connections to {', '.join(s.peers)}"
            else:
                ports = s.ports or (8000,)
                for port in ports:
                    rules.append(f"iptables -t nat -A LABFAULT_IN -p tcp --dport {port} -j REDIRECT --to-ports {PROXY_PORT}")
                where = f"connections into port {', '.join(map(str, ports))}"
            sidecar.sh(" && ".join(rules))
        except BaseException:
            self.heal()
            raise
        return f"userspace proxy delay {s.delay_ms:g}±{s.jitter_ms:g} ms on new {where} (no sch_netem)"


def heal_leftovers(lab) -> list[str]:
    """Heal what a dead run left in this lab: network rules (through its sidecars), frozen or
    stopped nodes. Returns what was repaired."""
    repaired = []
    for info in lab.engine.list_containers({LABEL_LAB: lab.name, LABEL_KIND: "sidecar"}):
        if info.status == "running":
            lab.engine.exec(info.name, ["sh", "-c", HEAL_SCRIPT])
        lab.engine.remove_container(info.id)
        repaired.append(f"removed fault sidecar of {info.labels.get(LABEL_NODE, '?')}")
    for node in lab.roles:
        info = lab.inspect(node)
        if info is None:
            continue
        if info.status == "paused":
            lab.unpause(node)
            repaired.append(f"unfroze {node}")
        elif info.status in ("exited", "created", "dead"):
            lab.start(node, wait=False)
            repaired.append(f"started {node}")
    return repaired
