"""The lab's own record of the faults in place, which outlives the process that injected them.

``lab break`` returns with its fault in place, and ``lab faults``, ``lab heal`` and ``lab
watch`` run in other processes, so the record cannot live in memory. It lives with the lab, in
Docker: one container per active fault, created and never started (from the target's own
image, no network, no published port), whose labels carry the record as JSON. It has the lab's
label, so ``lab down`` removes it with the lab, and ``docker ps -a`` shows it to anyone who
looks. Scenario runs write the same records (``RunState.inject``/``heal``), so ``lab faults``
shows their faults too, and what a SIGKILLed run left can be healed by ``lab heal``.

A record names the fault (kind, validated parameters, seed), who injected it (a manual break
or a scenario run, and the process), when, what the inject did, and what its heal needs from
the inject (``Resumable.handover``: a network fault's sidecar), so any later process can
rebuild the ``Fault`` and heal it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lab.engine import LABEL_KIND, LABEL_LAB, LABEL_NODE, ContainerInfo, ContainerSpec
from lab.errors import FaultError, LabError
from lab.faults.base import FAULTS, Fault, FaultSpec, Resumable, Seen, make_fault
from lab.topology.lab import (
    FAULT_RECORD_KIND,
    LABEL_FAULT_SIDECAR,
    LABEL_OWNER,
    Lab,
    owner_alive,
    owner_id,
)
from lab.topology.plan import container_name

LABEL_FAULT = "io.failover-lab.fault"        # on a record: the FaultRecord as JSON


class Origin(BaseModel):
    """Who injected a fault: a manual ``lab break`` or a scenario run, and its process."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["manual", "scenario"]
    name: str                                # "lab break", "scenario failover"
    owner: str = Field(default_factory=owner_id)   # host:pid

    def text(self) -> str:
        """"lab break --for 30s (pid 4242)", with "ended" once that process is gone."""
        pid = self.owner.rpartition(":")[2]
        ended = "" if owner_alive(self.owner) else ", ended"
        return f"{self.name} (pid {pid}{ended})"


def manual(name: str = "lab break") -> Origin:
    """This process, injecting by hand."""
    return Origin(kind="manual", name=name)


class FaultRecord(BaseModel):
    """One active fault as the lab records it (the JSON in its record's label)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    lab: str
    kind: str
    target: str
    params: dict[str, Any]                   # the fault's parameters, as its model dumps them
    seed: int = 0
    since: float                             # when the inject returned (epoch seconds)
    by: Origin
    detail: str = ""                         # what the inject said it did
    until: float | None = None               # `lab break --for` heals then
    handover: dict[str, Any] = Field(default_factory=dict)   # what the heal needs

    def spec(self) -> FaultSpec:
        """The fault as a spec again, its parameters validated by the fault's own model."""
        return FaultSpec(self.kind, FAULTS.get(self.kind).params.model_validate(self.params),
                         self.seed)

    def shown_params(self) -> str:
        """The parameters a person gave, "percent=30 direction=in" ("" for none)."""
        spec = self.spec()
        given = spec.params.model_dump(mode="json", exclude={"target"}, exclude_defaults=True)
        return " ".join(f"{key}={_text(value)}" for key, value in given.items())

    def who(self) -> str:
        """Who injected it; the process only where it matters (it would heal the fault)."""
        if self.by.kind == "manual" and self.until is None:
            return self.by.name
        return self.by.text()

    def container_name(self) -> str:
        return f"lab-{self.lab}-record-{self.target}-{self.kind}-{self.id}"


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(_text, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def new_record(lab_name: str, spec: FaultSpec, fault: Fault, detail: str, by: Origin, *,
               since: float | None = None, until: float | None = None) -> FaultRecord:
    """The record of a fault just injected (pure)."""
    return FaultRecord(
        id=uuid.uuid4().hex[:8], lab=lab_name, kind=spec.kind, target=spec.target,
        params=spec.params.model_dump(mode="json"), seed=spec.seed,
        since=time.time() if since is None else since, by=by, detail=detail, until=until,
        handover=fault.handover() if isinstance(fault, Resumable) else {})


def write(lab: Lab, spec: FaultSpec, fault: Fault, detail: str, by: Origin, *,
          until: float | None = None) -> FaultRecord:
    """Record a fault just injected: a created, never started container with the record."""
    record = new_record(lab.name, spec, fault, detail, by, until=until)
    image = _any_node_image(lab, spec.target)
    labels = {LABEL_LAB: lab.name, LABEL_KIND: FAULT_RECORD_KIND, LABEL_NODE: spec.target,
              LABEL_OWNER: by.owner, LABEL_FAULT: record.model_dump_json()}
    if record.handover.get("sidecar"):
        labels[LABEL_FAULT_SIDECAR] = str(record.handover["sidecar"])
    lab.engine.create_container(ContainerSpec(
        name=record.container_name(), image=image, labels=labels, network_mode="none",
        command=("true",), stop_timeout_s=1))
    return record


def _any_node_image(lab: Lab, preferred: str) -> str:
    # The record runs nothing; any image the lab already has will do, the target's first.
    for node in (preferred, *lab.roles):
        info = lab.inspect(node) if node in lab.roles else None
        if info is not None and info.image:
            return info.image
    raise FaultError(f"cannot record the fault on {preferred}: lab {lab.name} has no container")


def parse(infos: Iterable[ContainerInfo]) -> list[FaultRecord]:
    """The records among a lab's containers, oldest first (pure)."""
    records = []
    for info in infos:
        if info.labels.get(LABEL_KIND) != FAULT_RECORD_KIND:
            continue
        try:
            records.append(FaultRecord.model_validate_json(info.labels.get(LABEL_FAULT, "")))
        except ValidationError as exc:
            raise FaultError(f"fault record {info.name} cannot be read: "
                             f"{exc.errors()[0]['msg']}",
                             hint=f"`docker rm {info.name}` removes it") from None
    return sorted(records, key=lambda r: r.since)


def read(lab: Lab) -> list[FaultRecord]:
    """Every recorded fault of the lab, oldest first."""
    return parse(lab.engine.list_containers({LABEL_LAB: lab.name, LABEL_KIND: FAULT_RECORD_KIND}))


def forget(lab: Lab, record: FaultRecord | None) -> None:
    """Remove a fault's record (idempotent): its fault was healed."""
    if record is not None:
        lab.engine.remove_container(record.container_name())


def rebuild(lab: Lab, record: FaultRecord) -> Fault:
    """The fault object again, in any process, bound to what its inject set up."""
    fault = make_fault(record.spec(), lab)
    if isinstance(fault, Resumable):
        fault.resume(record.handover)
    return fault


def state(record: FaultRecord, containers: Mapping[str, ContainerInfo], lab_name: str) -> str:
    """Whether the recorded fault is still in place, from the lab's containers by name (pure):
    "in place", or "gone: <why>" (a run that started healed it, someone started the node), as
    the fault's own definition reads them."""
    seen = Seen(record.target, record.handover,
                containers.get(container_name(lab_name, record.target)), containers)
    return FAULTS.get(record.kind).in_place(seen)


def heal_recorded(lab: Lab) -> list[str]:
    """Heal every fault the lab's record holds (a manual break, a killed run's) from its
    record, and forget it; returns what was done. A scenario run does this before it starts,
    so it starts from a healthy lab and no record says a healed fault is still there."""
    done = []
    for record in read(lab):
        try:
            detail = rebuild(lab, record).heal()
        except LabError as exc:
            done.append(f"heal of the recorded {record.kind} on {record.target} failed: "
                        f"{exc.message}")
            continue
        forget(lab, record)
        if FAULTS.get(record.kind).lifecycle:
            lab.wait_ready(record.target)
        done.append(f"healed the recorded {record.kind} on {record.target} ({record.who()}): "
                    f"{detail}")
    return done
