"""What every fault is: a registered kind with typed parameters, an ``inject`` and an
idempotent ``heal``, and the meaning it owns.

Each family module (``lifecycle``, ``network``; any module of this package, found by
``lab.faults``) registers its kinds in ``FAULTS`` with the parameters they take (unknown keys
are refused: a ``kill`` with a ``percent`` is an error, not ignored), a factory binding it to a
lab, and what the rest of the lab asks of a fault instead of its name:

- ``effect`` (``lab.history.Effect``): what it does to the target (the process ends, drains
  first, is frozen, cut off, slowed), recorded on each of its events for the checks;
- ``failure_mode``: how NGINX sees the target fail (what one failed attempt costs a client);
- ``in_place``: whether a recorded fault is still in place, from the lab's containers;
- ``leftovers``: how the next run heals what a run killed mid-fault left behind;
- ``band``: how a run's timeline draws it.

This module imports neither family.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from lab.engine import ContainerInfo
from lab.expectations import FailureMode
from lab.history import Effect
from lab.registry import Registry, strict_model

Direction = Literal["both", "in", "out"]


class FaultParams(BaseModel):
    """A fault's parameters as a scenario file or ``lab break`` gives them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: str


class LinkParams(FaultParams):
    """A network fault on some or all of the target's links."""

    peers: tuple[str, ...] = ()          # only these links (empty: every link)
    direction: Direction = "both"


class LossParams(LinkParams):
    percent: Annotated[float, Field(gt=0, le=100)]


_TC_RATE = r"^\d+(\.\d+)?(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$"


class ThrottleParams(FaultParams):
    rate: Annotated[str, Field(pattern=_TC_RATE)] = "1mbit"   # tc tbf rate


class LatencyParams(FaultParams):
    delay_ms: Annotated[float, Field(gt=0, le=60_000)]
    jitter_ms: Annotated[float, Field(ge=0, le=60_000)] = 0.0
    peers: tuple[str, ...] = ()          # connections to these peers; else into ``ports``
    ports: tuple[Annotated[int, Field(ge=1, le=65535)], ...] = ()


@dataclass(frozen=True)
class FaultSpec:
    """A fault with its target resolved to a node name."""

    kind: str
    params: FaultParams
    seed: int = 0

    @property
    def target(self) -> str:
        return self.params.target

    def document(self) -> dict[str, Any]:
        """The JSON form in result.json: kind, target, seed and the parameters it takes."""
        return {"kind": self.kind, "target": self.target, "seed": self.seed,
                "params": self.params.model_dump(mode="json")}


class Fault(Protocol):
    """An inject/heal pair. ``heal`` must be safe to call twice, or without an inject."""

    spec: FaultSpec

    def inject(self) -> str: ...

    def heal(self) -> str: ...


@runtime_checkable
class Resumable(Protocol):
    """A fault whose heal needs what its inject set up (a sidecar): another process can heal
    it from the state ``handover`` gives, kept in the fault record (``lab.faults.record``)."""

    def handover(self) -> dict[str, Any]: ...

    def resume(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class Forgetting(Protocol):
    """A fault that removes keys from a store (``Effect.forgets``): which ones its inject
    removed, recorded on the inject's event for the checks."""

    def lost_keys(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class Band:
    """How a run's timeline draws a fault from its inject to its heal."""

    colour: str                 # a CSS colour, for the band and its label
    legend: str                 # what the legend says the colour means: "process ended"


@dataclass(frozen=True)
class Seen:
    """What the lab's containers show of a recorded fault, for its definition to say whether
    it is still in place (pure: ``lab faults`` and ``lab watch`` read one listing)."""

    target: str
    handover: Mapping[str, Any]                 # what the inject set up (``Resumable``)
    node: ContainerInfo | None                  # the target's container; None: it is missing
    containers: Mapping[str, ContainerInfo]     # every container of the lab, by name

    @property
    def status(self) -> str:
        """The target container's state ("running", "paused", "exited", ...; "missing")."""
        return self.node.status if self.node is not None else "missing"


# (lab, nodes or None for all) -> what was repaired, one line each
Leftovers = Callable[[Any, tuple[str, ...] | None], list[str]]


def always_in_place(seen: Seen) -> str:
    """A fault that leaves no trace in the containers: in place until it is healed."""
    return "in place"


@dataclass(frozen=True, kw_only=True)
class FaultDef:
    """One registered fault kind, and everything the lab asks of it."""

    name: str
    params: type[FaultParams]
    factory: Callable[[FaultSpec, Any], Fault]     # (spec, lab) -> fault
    summary: str
    family: str
    effect: Effect
    band: Band
    # "in place", or what shows it is not ("gone: backend-1 is running").
    in_place: Callable[[Seen], str]
    # How the next run heals what a run killed mid-fault left (beyond what its record lets a
    # later process heal); one hook may serve a whole family, and runs once. None: the fault
    # changes nothing a killed run could leave behind.
    leftovers: Leftovers | None
    # How NGINX sees the target while the fault lasts (None: it still answers, maybe slowly).
    failure_mode: FailureMode | None = None
    # The node's process is stopped or restarted: its heal waits until the node is ready again.
    lifecycle: bool = False

    def __post_init__(self) -> None:
        strict_model(self.params, f"fault {self.name}")


FAULTS: Registry[FaultDef] = Registry("fault")


def register(definition: FaultDef) -> FaultDef:
    """Add a fault kind to the registry (at import of its family module)."""
    return FAULTS.add(definition)


@dataclass
class NoFault:
    """The no-op fault: a scenario step that changes nothing (a control run)."""

    spec: FaultSpec

    def inject(self) -> str:
        return "nothing injected"

    def heal(self) -> str:
        return "nothing to heal"


register(FaultDef(name="none", params=FaultParams, factory=lambda spec, lab: NoFault(spec),
                  summary="change nothing (a control run)", family="none", effect=Effect(),
                  band=Band("#7f7f7f", "nothing injected (control)"), in_place=always_in_place,
                  leftovers=None))


def make_fault(spec: FaultSpec, lab: Any) -> Fault:
    """The fault object for a spec, bound to a running lab."""
    return FAULTS.get(spec.kind).factory(spec, lab)


def leftover_hooks() -> tuple[Leftovers, ...]:
    """Every registered fault's way of healing a killed run's leftovers, each once (a family
    shares one), in registration order."""
    hooks: list[Leftovers] = []
    for definition in FAULTS:
        if definition.leftovers is not None and definition.leftovers not in hooks:
            hooks.append(definition.leftovers)
    return tuple(hooks)


def heal_leftovers(lab: Any, nodes: tuple[str, ...] | None = None) -> list[str]:
    """Heal what a dead run left in this lab (or on ``nodes`` only), each fault's own way;
    returns what was repaired."""
    return [line for hook in leftover_hooks() for line in hook(lab, nodes)]
