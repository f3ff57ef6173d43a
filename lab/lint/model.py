"""What ``lab lint`` reviews and what it says: the configuration in force, read without Docker,
and findings, each with its arithmetic, its consequence and a fix."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from lab.config import LabConfig
from lab.contract import HealthPaths
from lab.expectations import Expectations
from lab.objectives import Objectives
from lab.topology.nginx_tree import Directive


class Level(StrEnum):
    """How bad a finding is: ``error`` (an objective or a claim cannot be met; exit 1) or
    ``warning`` (a failure behaviour the lab has measured, that may or may not matter)."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One pitfall in the configuration, said the way the lab measures it."""

    rule: str
    level: Level
    where: str              # file:line, or the lab.toml field
    arithmetic: str         # the numbers, from the configuration and the objectives
    consequence: str        # what happens, as measured by the lab
    fix: str

    def as_dict(self) -> dict[str, str]:
        """The finding as JSON-ready fields."""
        return {"rule": self.rule, "level": self.level.value, "where": self.where,
                "arithmetic": self.arithmetic, "consequence": self.consequence, "fix": self.fix}


@dataclass(frozen=True)
class Stream:
    """One request stream the review is for: how often, what it asks, how long its client
    waits before it gives up."""

    client: str
    rate_per_s: float
    method: str
    path: str
    timeout_s: float


@dataclass(frozen=True)
class Traffic:
    """The traffic a review is for: one scenario's streams (``lab lint --scenario``; failover's
    by default). Rules whose consequence depends on the rate do their arithmetic with it."""

    scenario: str = ""
    streams: tuple[Stream, ...] = ()

    @property
    def rate_per_s(self) -> float:
        """Every stream's rate, summed."""
        return sum(s.rate_per_s for s in self.streams)

    def text(self) -> str:
        """The traffic as one line: ``scenario failover: reads 20 req/s GET /health, ...``."""
        if not self.streams:
            return f"scenario {self.scenario or '-'}: no traffic"
        listed = ", ".join(f"{s.client} {s.rate_per_s:g} req/s {s.method} {s.path}"
                           for s in self.streams)
        timeouts = sorted({s.timeout_s for s in self.streams})
        return (f"scenario {self.scenario}: {listed}; clients give up after "
                f"{' or '.join(f'{t:g} s' for t in timeouts)}")


@dataclass(frozen=True)
class Assumptions:
    """What a review assumes where the configuration does not say; each can be set."""

    # The slowest answer a healthy backend gives at the scenario's rate (its p99 under that
    # load, e.g. from `lab load`). None: the reference backend's documented database budget
    # (images/backend/README.md: a dependency not answering gives 503 within ~2 s).
    backend_latency_s: float | None = None


@dataclass(frozen=True)
class LintInput:
    """The configuration in force, read statically: the expectations it implies, the NGINX
    tree (to point at lines), the objectives, and where each part comes from."""

    config: LabConfig
    expectations: Expectations
    tree: tuple[Directive, ...]
    objectives: Objectives
    nginx_source: str                # "backend.conf" or "nginx.conf rendered from lab.toml"
    health: HealthPaths
    rendered: bool                   # NGINX's configuration is the lab's own rendering
    traffic: Traffic = Traffic()
    assumptions: Assumptions = Assumptions()


@dataclass(frozen=True)
class Rule:
    """One lint rule: its name, what it looks for, and the checks whose outcome it predicts
    (``lab run`` shows a finding before a scenario with one of those checks)."""

    name: str
    summary: str
    check: Callable[[LintInput], list[Finding]]
    concerns: frozenset[str] = frozenset()
