"""cpu-starve: the target keeps running on a sliver of a core (the "slow but alive" failure).

Its container's CFS quota is cut with Docker's update API (``cpus`` cores per 10 ms period, a
tenth of a core by default; below that the period grows, as the kernel's smallest quota is
1 ms), the way a noisy neighbour or a mis-set limit starves a process in
production. Nothing fails: connects succeed, every answer comes, later. NGINX's passive checks
count only errors and timeouts, so a slow backend stays in rotation as long as it answers
within ``proxy_read_timeout``; only a latency objective sees it.

The quota the target had before is kept with the fault's record (``handover``), so any later
process heals it back; a run killed between the update and the record leaves the quota cut
(``lab heal --all`` cannot know it then: the next ``lab up`` recreates the node).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from lab.engine import CpuLimit
from lab.faults.base import Band, FaultDef, FaultParams, FaultSpec, always_in_place, register
from lab.history import Effect


class StarveParams(FaultParams):
    # Cores the target may use: a CFS quota per 10 ms period, or per a longer one below a tenth
    # of a core (the kernel's smallest quota is 1 ms, its longest period 1 s).
    cpus: Annotated[float, Field(ge=0.001, le=64)] = 0.1


@dataclass
class CpuStarve:
    spec: FaultSpec
    lab: Any
    before: CpuLimit | None = None

    def inject(self) -> str:
        container = self.lab.container(self.spec.target)
        self.before = self.lab.engine.cpu_limit(container)
        applied = self.lab.engine.set_cpu_limit(container, self.spec.params.cpus)
        assert applied is not None
        return (f"held to {self.spec.params.cpus:g} of a core ({applied.quota_us / 1000:g} ms of "
                f"CPU per {applied.period_us / 1000:g} ms period)")

    def heal(self) -> str:
        if self.before is None:
            return "nothing to heal"
        self.lab.engine.restore_cpu_limit(self.lab.container(self.spec.target), self.before)
        self.before = None
        return "CPU quota restored"

    def handover(self) -> dict[str, Any]:
        """The quota to put back, for a later process's heal."""
        if self.before is None:
            return {}
        return {"period_us": self.before.period_us, "quota_us": self.before.quota_us,
                "nano_cpus": self.before.nano_cpus}

    def resume(self, state: Mapping[str, Any]) -> None:
        if "quota_us" in state:
            self.before = CpuLimit(int(state["period_us"]), int(state["quota_us"]),
                                   int(state.get("nano_cpus", 0)))


register(FaultDef(name="cpu-starve", params=StarveParams, factory=CpuStarve, family="resources",
                  in_place=always_in_place, leftovers=None, effect=Effect(slows=True),
                  band=Band("#bcbd22", "starved of CPU"),
                  summary="cut the target's CPU to a sliver of a core (docker update): it "
                          "answers everything, slowly; passive health checks never eject it"))
