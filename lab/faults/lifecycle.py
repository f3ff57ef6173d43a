"""Faults on the container itself: kill (SIGKILL), stop (SIGTERM, then SIGKILL), freeze
(cgroup freezer: the kernel still completes TCP handshakes, the process never answers), and
restart. Healing starts or unfreezes the node; waiting for readiness is the runner's job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from lab.expectations import FailureMode
from lab.faults.base import FaultDef, FaultParams, FaultSpec, register


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
    if state in ("exited", "created", "dead"):
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


register(FaultDef(name="kill", params=FaultParams, factory=Kill, family="lifecycle", lifecycle=True,
                  failure_mode=FailureMode.UNREACHABLE,
                  summary="SIGKILL the node; its address vanishes, connects to it hang"))
register(FaultDef(name="stop", params=FaultParams, factory=Stop, family="lifecycle", lifecycle=True,
                  failure_mode=FailureMode.UNREACHABLE,
                  summary="SIGTERM, then SIGKILL after the stop timeout (a graceful shutdown)"))
register(FaultDef(name="freeze", params=FaultParams, factory=Freeze, family="lifecycle",
                  lifecycle=True, failure_mode=FailureMode.FROZEN,
                  summary="pause the node (cgroup freezer): handshakes complete, nothing answers"))
register(FaultDef(name="restart", params=FaultParams, factory=Restart, family="lifecycle",
                  lifecycle=True, failure_mode=FailureMode.UNREACHABLE,
                  summary="stop and start the node at once"))
