"""The lab's exception tree. The CLI catches ``LabError`` and prints its message; nothing else.

    LabError
    ├── ConfigError          a malformed lab.toml or scenario file (names the field / line)
    ├── DockerUnavailable    no Docker engine answers
    ├── ImageBuildError      an image build failed (carries the failing step and its log)
    ├── NodeStartError       a node did not become ready (carries its last log lines)
    ├── PortConflict         a fixed published port is taken
    ├── LabNotFound          the named lab is not running
    ├── UnknownNode          a fault or command names a node the topology does not have
    ├── FaultError           a fault could not be injected or healed
    └── WaitTimeout          a condition the lab waited for did not hold in time (lab.waits)

Typical use::

    try:
        lab.up()
    except LabError as exc:
        print(f"{type(exc).__name__}: {exc}")
"""

from __future__ import annotations


class LabError(Exception):
    """Base of every error the lab reports to a user; ``hint`` says what to do next."""

    def __init__(self, message: str, *, hint: str | None = None, details: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def render(self) -> str:
        """The full user-facing text: message, details (log lines), hint."""
        parts = [self.message]
        if self.details:
            parts.append(self.details.rstrip())
        if self.hint:
            parts.append(f"Hint: {self.hint}")
        return "\n".join(parts)


class ConfigError(LabError):
    """A configuration or scenario file is malformed."""


class DockerUnavailable(LabError):
    """No Docker engine answers at the configured address."""


class ImageBuildError(LabError):
    """An image build failed; ``details`` holds the failing step's output."""


class NodeStartError(LabError):
    """A node failed to start or to become ready."""


class PortConflict(LabError):
    """A fixed published port is already in use."""


class LabNotFound(LabError):
    """No running lab has the given name."""


class UnknownNode(LabError):
    """A node name that the topology does not have."""


class FaultError(LabError):
    """A fault could not be injected or healed."""


class WaitTimeout(LabError):
    """A condition the lab waited for did not hold within its timeout (``lab.waits``)."""
