"""The fault record: a fault survives its process as JSON in a label, and reads back the same."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lab.engine import LABEL_KIND, LABEL_LAB, ContainerInfo
from lab.errors import FaultError
from lab.faults import FAULTS, FaultSpec, NoFault
from lab.faults.base import LossParams
from lab.faults.record import LABEL_FAULT, FaultRecord, Origin, new_record, parse, state
from lab.topology.lab import FAULT_RECORD_KIND


class _Handed(NoFault):
    """A fault whose heal needs a sidecar, as a network fault's does."""

    def handover(self) -> dict[str, str]:
        return {"sidecar": "lab-x-fault-backend-1-abc123"}

    def resume(self, state: dict[str, str]) -> None:
        self.resumed = state


def _info(name: str, status: str, labels: dict[str, str] | None = None) -> ContainerInfo:
    return ContainerInfo(id=name, name=name, status=status, labels=labels or {},
                         started_at=datetime.now(UTC), ip_address=None, published={}, env={},
                         exit_code=None)


def _loss() -> FaultSpec:
    return FaultSpec("loss", LossParams(target="backend-1", percent=30, direction="in"), seed=7)


def test_a_record_round_trips_through_its_label() -> None:
    """What write() puts in the label reads back as the same record, spec and handover."""
    by = Origin(kind="manual", name="lab break", owner="host:1")
    record = new_record("x", _loss(), _Handed(_loss()), "30% packet loss (in)", by, until=99.5)
    again = FaultRecord.model_validate_json(record.model_dump_json())
    assert again == record
    assert again.spec() == _loss()
    assert again.handover == {"sidecar": "lab-x-fault-backend-1-abc123"}
    assert again.shown_params() == "direction=in percent=30"
    assert again.container_name().startswith("lab-x-record-backend-1-loss-")


def test_parse_keeps_records_only_oldest_first_and_refuses_unreadable_ones() -> None:
    """Only fault-record containers count; a record no version of the lab can read is named."""
    by = Origin(kind="scenario", name="scenario failover", owner="host:2")
    first = new_record("x", _loss(), NoFault(_loss()), "", by, since=10.0)
    spec = FaultSpec("kill", FAULTS.get("kill").params(target="backend-2"))
    second = new_record("x", spec, NoFault(spec), "SIGKILL", by, since=20.0)
    labels = {LABEL_LAB: "x", LABEL_KIND: FAULT_RECORD_KIND}
    infos = [_info("b", "created", {**labels, LABEL_FAULT: second.model_dump_json()}),
             _info("node", "running", {LABEL_LAB: "x", LABEL_KIND: "node"}),
             _info("a", "created", {**labels, LABEL_FAULT: first.model_dump_json()})]
    assert parse(infos) == [first, second]
    with pytest.raises(FaultError, match="fault record broken cannot be read"):
        parse([_info("broken", "created", {**labels, LABEL_FAULT: '{"id": 1}'})])


def test_unknown_fields_are_refused() -> None:
    """A record is as strict as the parameters in it: an unknown key is an error, not ignored."""
    by = Origin(kind="manual", name="lab break", owner="host:1")
    data = new_record("x", _loss(), NoFault(_loss()), "", by).model_dump()
    with pytest.raises(ValueError, match="extra"):
        FaultRecord.model_validate({**data, "colour": "red"})


@pytest.mark.parametrize(("kind", "node_status", "sidecar_status", "expected"), [
    ("kill", "exited", None, "in place"),
    ("kill", "running", None, "gone: backend-1 is running"),
    ("freeze", "paused", None, "in place"),
    ("freeze", "running", None, "gone: backend-1 is running"),
    ("restart", "running", None, "done: restarted"),
    ("loss", "running", "running", "in place"),
    ("loss", "running", None, "sidecar removed: its rules may remain (lab heal removes them)"),
])
def test_state_says_whether_the_fault_is_still_in_place(kind: str, node_status: str,
                                                        sidecar_status: str | None,
                                                        expected: str) -> None:
    """The record is judged against what Docker shows: node state, or the fault's sidecar."""
    params = {"percent": 30} if kind == "loss" else {}
    spec = FaultSpec(kind, FAULTS.get(kind).params(target="backend-1", **params))
    fault = _Handed(spec) if kind == "loss" else NoFault(spec)
    record = new_record("x", spec, fault, "", Origin(kind="manual", name="lab break", owner="h:1"))
    containers = {"lab-x-backend-1": _info("lab-x-backend-1", node_status)}
    if sidecar_status:
        name = "lab-x-fault-backend-1-abc123"
        containers[name] = _info(name, sidecar_status)
    assert state(record, containers, "x") == expected
