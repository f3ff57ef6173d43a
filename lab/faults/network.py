"""Network faults, applied from a sidecar that joins the target's network namespace.

The sidecar (image ``sidecar``: iproute2, iptables, the latency proxy) runs with NET_ADMIN in
``network_mode=container:<target>``, so node images need neither tools nor privileges. Each
fault keeps its rules in chains of its own (``LF_<KIND>_IN``/``_OUT``) or the root qdisc of
eth0, so healing one fault leaves another on the same node alone, and healing is idempotent;
``HEAL_SCRIPT`` removes every chain the lab may have added. The sidecar is labelled, and a
run that dies mid-fault leaves a sidecar that the next run finds, uses to heal the target,
and removes (``remove_sidecars``).

Latency: this kernel family may lack ``sch_netem``. The lab probes for it once; without it,
latency comes from ``lab-faultproxy`` (userspace): iptables REDIRECTs new TCP connections into
the target's port (or from the target to a peer) through a proxy that delays every chunk.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from lab.engine import LABEL_KIND, LABEL_LAB, LABEL_NODE, ContainerSpec, Engine
from lab.errors import FaultError
from lab.expectations import FailureMode
from lab.faults.base import (
    Band,
    FaultDef,
    FaultSpec,
    LatencyParams,
    LinkParams,
    LossParams,
    Seen,
    ThrottleParams,
    register,
)
from lab.history import Effect
from lab.topology.lab import LABEL_OWNER, owner_id
from lab.topology.plan import container_name

PROXY_PORT = 15001
PROXY_MARK = "0x1ab"

# Idempotent: removes every hook and chain the lab may have added (LF_*), and the root qdisc.
HEAL_SCRIPT = r"""
for table in filter nat; do
  for chain in $(iptables -t $table -S | sed -n 's/^-N \(LF_[A-Z_]*\)$/\1/p'); do
    for hook in INPUT OUTPUT PREROUTING; do
      while iptables -t $table -D $hook -j $chain 2>/dev/null; do :; done
    done
    iptables -t $table -F $chain; iptables -t $table -X $chain
  done
done
tc qdisc del dev eth0 root 2>/dev/null
true
"""


def _chains(table: str, kind: str) -> str:
    """Create this fault's IN and OUT chains and hook them in first."""
    hooks = {"filter": ("INPUT", "OUTPUT"), "nat": ("PREROUTING", "OUTPUT")}[table]
    prefix = f"LF_{kind.upper()}"
    return (f"iptables -t {table} -N {prefix}_IN && "
            f"iptables -t {table} -I {hooks[0]} -j {prefix}_IN && "
            f"iptables -t {table} -N {prefix}_OUT && "
            f"iptables -t {table} -I {hooks[1]} -j {prefix}_OUT")


def _unchain(table: str, kind: str) -> str:
    """Remove this fault's chains (idempotent)."""
    hooks = {"filter": ("INPUT", "OUTPUT"), "nat": ("PREROUTING", "OUTPUT")}[table]
    prefix = f"LF_{kind.upper()}"
    return "; ".join(
        f"while iptables -t {table} -D {hook} -j {prefix}_{d} 2>/dev/null; do :; done; "
        f"iptables -t {table} -F {prefix}_{d} 2>/dev/null; "
        f"iptables -t {table} -X {prefix}_{d} 2>/dev/null"
        for hook, d in zip(hooks, ("IN", "OUT"), strict=True)
    ) + "; true"


@dataclass
class Sidecar:
    """A helper container in a node's network namespace; removed by ``close``. Given a
    ``name``, it is the existing sidecar of a fault an earlier process injected."""

    engine: Engine
    lab_name: str
    image: str
    target: str
    name: str = ""

    def __post_init__(self) -> None:
        if self.name:
            return
        self.name = f"lab-{self.lab_name}-fault-{self.target}-{uuid.uuid4().hex[:6]}"
        spec = ContainerSpec(
            name=self.name, image=self.image,
            labels={LABEL_LAB: self.lab_name, LABEL_KIND: "sidecar", LABEL_NODE: self.target,
                    LABEL_OWNER: owner_id()},
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


@cache
def _netem_available(engine: Engine, image: str) -> bool:
    """Whether this kernel has sch_netem, probed once in a sidecar with its own empty netns."""
    spec = ContainerSpec(name=f"lab-netem-probe-{uuid.uuid4().hex[:6]}", image=image,
                         labels={LABEL_LAB: "netem-probe", LABEL_KIND: "sidecar"},
                         network_mode="none", cap_add=("NET_ADMIN",),
                         command=("tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay",
                                  "1ms"))
    return engine.run_sidecar(spec, timeout_s=30).exit_code == 0


@dataclass
class NetworkFault:
    """The network family's shared mechanics (a family module like ``reset`` builds on it): a
    sidecar per injection, the heal script, peers as addresses."""

    spec: FaultSpec
    lab: object  # a Lab
    sidecar: Sidecar | None = None

    def _open(self) -> Sidecar:
        lab = self.lab
        if self.spec.target not in lab.roles:  # type: ignore[attr-defined]
            lab.container(self.spec.target)  # type: ignore[attr-defined] - raises UnknownNode
        self.sidecar = Sidecar(lab.engine, lab.name, lab.sidecar_image(), self.spec.target)  # type: ignore[attr-defined]
        self.sidecar.sh(self._cleanup(), check=False)  # a clean start for this fault's own rules
        return self.sidecar

    def handover(self) -> dict[str, Any]:
        """What a later process needs to heal this fault: the sidecar it was injected from."""
        return {"sidecar": self.sidecar.name if self.sidecar is not None else ""}

    def resume(self, state: Mapping[str, Any]) -> None:
        """Take over this fault from the process that injected it (``handover``'s state)."""
        lab: Any = self.lab
        name = str(state.get("sidecar") or "")
        info = lab.engine.inspect(name) if name else None
        if info is not None and info.status == "running":
            self.sidecar = Sidecar(lab.engine, lab.name, "", self.spec.target, name)
            return
        # Its sidecar is gone (an orphan cleanup that did not know the record) but its rules
        # live in the target's namespace: a fresh sidecar lets heal remove them.
        if info is not None:
            lab.engine.remove_container(name)
        self.sidecar = Sidecar(lab.engine, lab.name, lab.sidecar_image(), self.spec.target)

    def _cleanup(self) -> str:
        """The script that removes exactly what this fault adds."""
        return _unchain("filter", self.spec.kind)

    def _peer_addresses(self) -> list[str]:
        """The peers' addresses, or the whole lab subnet when the fault cuts every link."""
        by_node = {node: ip for ip, node in self.lab.addresses().items()}  # type: ignore[attr-defined]
        if not self.spec.params.peers:
            own = by_node.get(self.spec.target)
            if own is None:
                raise FaultError(f"{self.spec.target} has no address (is it running?)")
            return [own.rsplit(".", 1)[0] + ".0/24"]
        missing = [p for p in self.spec.params.peers if p not in by_node]
        if missing:
            raise FaultError(f"no address for {', '.join(missing)} (unknown or not running)")
        return [by_node[p] for p in self.spec.params.peers]

    def _filter_rules(self, *actions: str) -> str:
        """This fault's chains, and for each peer link in its direction ``actions`` in order
        (the first that matches a packet decides)."""
        prefix = f"LF_{self.spec.kind.upper()}"
        lines = [_chains("filter", self.spec.kind)]
        for address in self._peer_addresses():
            for action in actions:
                if self.spec.params.direction in ("both", "in"):
                    lines.append(f"iptables -A {prefix}_IN -s {address} {action}")
                if self.spec.params.direction in ("both", "out"):
                    lines.append(f"iptables -A {prefix}_OUT -d {address} {action}")
        return " && ".join(lines)

    def _own_rules(self, *, out: tuple[str, ...] = (), in_: tuple[str, ...] = ()) -> str:
        """This fault's chains, with ``out`` appended to its OUT chain and ``in_`` to its IN
        chain, in order: a fault of the target's own traffic, not of its links."""
        prefix = f"LF_{self.spec.kind.upper()}"
        return " && ".join([_chains("filter", self.spec.kind),
                            *(f"iptables -A {prefix}_OUT {match}" for match in out),
                            *(f"iptables -A {prefix}_IN {match}" for match in in_)])

    def _drain_s(self) -> float:
        """How long connections set up during the fault may still need the sidecar."""
        return 0.0

    def heal(self) -> str:
        if self.sidecar is None:
            return "nothing to heal"
        try:
            self.sidecar.sh(self._cleanup(), check=False)
            # New connections now go direct; let those already inside finish.
            time.sleep(self._drain_s())
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


class Partition(NetworkFault):
    """Drop every packet between the target and its peers (all others by default)."""

    def inject(self) -> str:
        peers = ", ".join(self.spec.params.peers) or "all other nodes"
        return self._inject(self._filter_rules("-j DROP"),
                            f"partitioned from {peers} ({self.spec.params.direction})")


class Loss(NetworkFault):
    """Drop a random share of packets on the target's links."""

    def inject(self) -> str:
        probability = self.spec.params.percent / 100
        rule = f"-m statistic --mode random --probability {probability:.4f} -j DROP"
        return self._inject(self._filter_rules(rule),
                            f"{self.spec.params.percent:g}% packet loss "
                            f"({self.spec.params.direction})")


class Throttle(NetworkFault):
    """Limit the target's egress bandwidth with a token bucket (tc tbf)."""

    def _cleanup(self) -> str:
        return "tc qdisc del dev eth0 root 2>/dev/null; true"

    def inject(self) -> str:
        script = (f"tc qdisc add dev eth0 root tbf rate {self.spec.params.rate} burst 32kbit "
                  "latency 400ms")
        return self._inject(script, f"egress limited to {self.spec.params.rate} (tbf)")


class Latency(NetworkFault):
    """Delay the target's traffic: netem where the kernel has it, else the userspace proxy.

    ``round_trip_s`` is what one request through the slowed link gains: netem delays egress
    (the answer) once; the proxy delays the request and the answer."""

    round_trip_s: float = 0.0
    _netem: bool = False

    def _cleanup(self) -> str:
        if self._netem:
            return "tc qdisc del dev eth0 root 2>/dev/null; true"
        return _unchain("nat", self.spec.kind)

    def _drain_s(self) -> float:
        # Removing the proxy would reset the connections it carries, and NGINX would count
        # those resets as failures of the target: wait out one slowed round trip first.
        jitter_s = self.spec.params.jitter_ms / 1000
        return 0.0 if self._netem else self.round_trip_s + 2 * jitter_s + 0.5

    def handover(self) -> dict[str, Any]:
        return {**super().handover(), "netem": self._netem, "round_trip_s": self.round_trip_s}

    def resume(self, state: Mapping[str, Any]) -> None:
        super().resume(state)
        self._netem = bool(state.get("netem", False))
        self.round_trip_s = float(state.get("round_trip_s", 0.0))

    def inject(self) -> str:
        s, p = self.spec, self.spec.params
        if _netem_available(self.lab.engine, self.lab.sidecar_image()):  # type: ignore[attr-defined]
            self.round_trip_s = p.delay_ms / 1000
            self._netem = True
            script = f"tc qdisc add dev eth0 root netem delay {p.delay_ms:g}ms {p.jitter_ms:g}ms"
            return self._inject(script, f"netem delay {p.delay_ms:g}±{p.jitter_ms:g} ms on egress")
        self.round_trip_s = 2 * p.delay_ms / 1000
        sidecar = self._open()
        try:
            sidecar.background(["python3", "/usr/local/bin/lab-faultproxy",
                                "--listen", str(PROXY_PORT),
                                "--delay-ms", str(p.delay_ms), "--jitter-ms", str(p.jitter_ms),
                                "--mark", PROXY_MARK, "--seed", str(s.seed)])
            # Wait until the proxy listens, or connections would be redirected into nothing.
            sidecar.sh(f"for i in $(seq 50); do ss -ltn | grep -q ':{PROXY_PORT} ' && exit 0; "
                       "sleep 0.1; done; exit 1")
            rules = [_chains("nat", s.kind)]
            if p.peers:
                for address in self._peer_addresses():
                    rules.append(f"iptables -t nat -A LF_LATENCY_OUT -p tcp -d {address} "
                                 f"-m mark ! --mark {PROXY_MARK} "
                                 f"-j REDIRECT --to-ports {PROXY_PORT}")
                where = f"connections to {', '.join(p.peers)}"
            else:
                ports = p.ports or (8000,)
                for port in ports:
                    rules.append(f"iptables -t nat -A LF_LATENCY_IN -p tcp --dport {port} "
                                 f"-j REDIRECT --to-ports {PROXY_PORT}")
                where = f"connections into port {', '.join(map(str, ports))}"
            sidecar.sh(" && ".join(rules))
        except BaseException:
            self.heal()
            raise
        return (f"userspace proxy delay {p.delay_ms:g}±{p.jitter_ms:g} ms on new {where} "
                "(no sch_netem)")


def remove_sidecars(lab: Any, nodes: tuple[str, ...] | None = None) -> list[str]:
    """Remove the rules a killed run left in its targets' namespaces (through its sidecars,
    ``nodes`` only when given), and the sidecars; returns what was repaired."""
    repaired = []
    for info in lab.engine.list_containers({LABEL_LAB: lab.name, LABEL_KIND: "sidecar"}):
        if nodes is not None and info.labels.get(LABEL_NODE) not in nodes:
            continue
        if info.status == "running":
            lab.engine.exec(info.name, ["sh", "-c", HEAL_SCRIPT])
        lab.engine.remove_container(info.id)
        repaired.append(f"removed fault sidecar of {info.labels.get(LABEL_NODE, '?')}")
    return repaired


def sidecar_in_place(seen: Seen) -> str:
    """In place while the sidecar it was injected from runs."""
    sidecar = seen.containers.get(str(seen.handover.get("sidecar", "")))
    if sidecar is None or sidecar.status != "running":
        # Removing a sidecar does not remove the rules it put in the target's namespace.
        return "sidecar removed: its rules may remain (lab heal removes them)"
    return "in place"


SLOWED = Band("#ff7f0e", "slowed or lossy")

register(FaultDef(name="partition", params=LinkParams, factory=Partition, family="network",
                  in_place=sidecar_in_place, leftovers=remove_sidecars,
                  failure_mode=FailureMode.UNREACHABLE, effect=Effect(cuts_off=True),
                  band=Band("#9467bd", "cut off"),
                  summary="drop every packet between the target and its peers (iptables DROP)"))
register(FaultDef(name="loss", params=LossParams, factory=Loss, family="network",
                  in_place=sidecar_in_place, leftovers=remove_sidecars,
                  effect=Effect(slows=True), band=SLOWED,
                  summary="drop a random share of packets on the target's links"))
register(FaultDef(name="throttle", params=ThrottleParams, factory=Throttle, family="network",
                  in_place=sidecar_in_place, leftovers=remove_sidecars,
                  effect=Effect(slows=True), band=SLOWED,
                  summary="limit the target's egress bandwidth (tc tbf)"))
register(FaultDef(name="latency", params=LatencyParams, factory=Latency, family="network",
                  in_place=sidecar_in_place, leftovers=remove_sidecars,
                  effect=Effect(slows=True), band=SLOWED,
                  summary="delay the target's traffic (netem, or the userspace proxy without it)"))
