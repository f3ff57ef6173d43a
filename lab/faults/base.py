"""What every fault is: a target, an ``inject`` and an idempotent ``heal``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from lab.errors import ConfigError

Direction = Literal["both", "in", "out"]


@dataclass(frozen=True)
class FaultSpec:
    """A fault as a scenario names it, with the target already resolved to a node name."""

    kind: str
    target: str
    peers: tuple[str, ...] = ()          # network faults: only these links (empty: all)
    direction: Direction = "both"
    percent: float = 0.0                 # loss
    rate: str = "1mbit"                  # throttle (tc tbf rate)
    delay_ms: float = 0.0                # latency
    jitter_ms: float = 0.0
    ports: tuple[int, ...] = field(default_factory=tuple)  # latency: inbound ports to slow
    seed: int = 0


class Fault(Protocol):
    """An inject/heal pair. ``heal`` must be safe to call twice, or without an inject."""

    spec: FaultSpec

    def inject(self) -> str: ...

    def heal(self) -> str: ...


@dataclass
class NoFault:
    """The no-op fault: a scenario step that changes nothing (a control run)."""

    spec: FaultSpec

    def inject(self) -> str:
        return "nothing injected"

    def heal(self) -> str:
        return "nothing to heal"


def make_fault(spec: FaultSpec, lab) -> Fault:
    """The fault object for a spec, bound to a running lab."""
    from lab.faults import lifecycle, network

    factories = {
        "none": NoFault,
        "kill": lambda s: lifecycle.Kill(s, lab),
        "stop": lambda s: lifecycle.Stop(s, lab),
        "freeze": lambda s: lifecycle.Freeze(s, lab),
        "restart": lambda s: lifecycle.Restart(s, lab),
        "partition": lambda s: network.Partition(s, lab),
        "loss": lambda s: network.Loss(s, lab),
        "throttle": lambda s: network.Throttle(s, lab),
        "latency": lambda s: network.Latency(s, lab),
    }
    if spec.kind not in factories:
        raise ConfigError(f"unknown fault {spec.kind!r}", hint=f"faults: {', '.join(FAULT_KINDS)}")
    return factories[spec.kind](spec)


FAULT_KINDS: tuple[str, ...] = ("none", "kill", "stop", "freeze", "restart", "partition", "loss",
                                "throttle", "latency")
