"""Faults on the container itself: kill (SIGKILL), stop (SIGTERM, then SIGKILL), freeze
(cgroup freezer: the kernel still completes TCP handshakes, the process never answers), and
restart. Healing starts or unfreezes the node; waiting for readiness is the runner's job. A run
killed mid-fault leaves the node stopped or paused: ``restore_nodes`` brings it back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from lab.engine import LABEL_KIND, LABEL_LAB
from lab.expectations import FailureMode
from lab.faults.base import Band, FaultDef, FaultParams, FaultSpec, Seen, register
from lab.history import Effect

STOPPED = ("exited", "created", "dead")


class NodeControl(Protocol):
    """The narrow part of a lab that lifecycle faults need."""

    def kill(self, node: str) -> None: ...
    def stop(self, node: str, timeout_s: int | None = None) -> None: ...
    def start(self, node: str, *, wait: bool = True, timeout_s: float = ...) -> object: ...
    def pause(self, node: str) -> None: ...
    def unpause(self, node: str) -> None: ...
    def inspect(self, node: str) -> object: ...


def _state(lab: NodeControl, node: str) -> str:
    info = lab.inspect(node)
    return getattr(info, "status", "missing")


def _ensure_running(lab: NodeControl, node: str) -> str:
    state = _state(lab, node)
    if state == "paused":
        lab.unpause(node)
        return "unfrozen"
    if state in STOPPED:
        lab.start(node, wait=False)
        return "started"
    return f"already {state}"


@dataclass
class Kill:
    spec: FaultSpec
    lab: NodeControl

    def inject(self) -> str:
        self.lab.kill(self.spec.target)
        return "SIGKILL"

    def heal(self) -> str:
        return _ensure_running(self.lab, self.spec.target)


@dataclass
class Stop:
    spec: FaultSpec
    lab: NodeControl

    def inject(self) -> str:
        self.lab.stop(self.spec.target)
        return "SIGTERM, SIGKILL after the stop timeout"

    def heal(self) -> str:
        return _ensure_running(self.lab, self.spec.target)


@dataclass
class Freeze:
    spec: FaultSpec
    lab: NodeControl

    def inject(self) -> str:
        self.lab.pause(self.spec.target)
        return "paused (cgroup freezer)"

    def heal(self) -> str:
        return _ensure_running(self.lab, self.spec.target)


@dataclass
class Restart:
    """Stop then start at once; the pair's heal only makes sure the node runs."""

    spec: FaultSpec
    lab: NodeControl

    def inject(self) -> str:
        self.lab.stop(self.spec.target)
        self.lab.start(self.spec.target, wait=False)
        return "stopped and started"

    def heal(self) -> str:
        return _ensure_running(self.lab, self.spec.target)


def restore_nodes(lab: Any, nodes: tuple[str, ...] | None = None) -> list[str]:
    """Unfreeze the paused and start the stopped nodes a killed run left (``nodes`` only, when
    given); returns what was repaired."""
    repaired = []
    # Every node's state from one listing call, not an inspect per node (a run starts so).
    states = {info.node: info for info in
              lab.engine.container_states({LABEL_LAB: lab.name, LABEL_KIND: "node"})}
    for node in lab.roles if nodes is None else [n for n in lab.roles if n in nodes]:
        info = states.get(node)
        if info is None:
            continue
        if info.status == "paused":
            lab.unpause(node)
            repaired.append(f"unfroze {node}")
        elif info.status in STOPPED:
            lab.start(node, wait=False)
            repaired.append(f"started {node}")
    return repaired


def _held_while(*statuses: str) -> Callable[[Seen], str]:
    """In place while the target's container is in one of ``statuses``."""
    def in_place(seen: Seen) -> str:
        return "in place" if seen.status in statuses else f"gone: {seen.target} is {seen.status}"
    return in_place


def _restarted(seen: Seen) -> str:
    # The inject did the whole fault: once the node runs again, it is over.
    return "done: restarted" if seen.status == "running" else f"in place ({seen.status})"


ENDED = Band("#d62728", "process ended")

register(FaultDef(name="kill", params=FaultParams, factory=Kill, family="lifecycle", lifecycle=True,
                  failure_mode=FailureMode.UNREACHABLE, effect=Effect(ends=True), band=ENDED,
                  in_place=_held_while(*STOPPED), leftovers=restore_nodes,
                  summary="SIGKILL the node; its address vanishes, connects to it hang"))
register(FaultDef(name="stop", params=FaultParams, factory=Stop, family="lifecycle", lifecycle=True,
                  failure_mode=FailureMode.UNREACHABLE, effect=Effect(ends=True, drains=True),
                  band=ENDED, in_place=_held_while(*STOPPED), leftovers=restore_nodes,
                  summary="SIGTERM, then SIGKILL after the stop timeout (a graceful shutdown)"))
register(FaultDef(name="freeze", params=FaultParams, factory=Freeze, family="lifecycle",
                  lifecycle=True, failure_mode=FailureMode.FROZEN, effect=Effect(freezes=True),
                  band=Band("#1f77b4", "frozen"), in_place=_held_while("paused"),
                  leftovers=restore_nodes,
                  summary="pause the node (cgroup freezer): handshakes complete, nothing answers"))
register(FaultDef(name="restart", params=FaultParams, factory=Restart, family="lifecycle",
                  lifecycle=True, failure_mode=FailureMode.UNREACHABLE,
                  effect=Effect(ends=True, drains=True, restarts=True),
                  band=Band("#8c564b", "restarted"), in_place=_restarted, leftovers=restore_nodes,
                  summary="stop and start the node at once"))
