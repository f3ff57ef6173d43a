"""The exposure check: every lab container publishes its documented ports, on 127.0.0.1 only."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lab.checks.base import Verdict
from lab.checks.exposure import check_exposure
from lab.config import LabConfig, PublishConfig
from lab.history import NodeExposure, PortBinding, PortConnect
from lab.topology.expect import documented_ports
from lab.topology.plan import node_roles

pytestmark = pytest.mark.covers("check:exposure")

T0 = 1_700_000_000.0
ROLES = node_roles(LabConfig())
DOCUMENTED = documented_ports(PublishConfig())
HOST_PORTS = {"80/tcp": 40080, "443/tcp": 40443, "8080/tcp": 48080, "6432/tcp": 46432,
              "5432/tcp": 45432, "6379/tcp": 46379}


def healthy() -> list[NodeExposure]:
    """What Docker reports for the default lab: documented ports on 127.0.0.1, backends bare."""
    out = []
    for node, role in ROLES.items():
        ports = [p.container_port for p in DOCUMENTED if p.role == role]
        bindings = tuple(PortBinding(port, "127.0.0.1", HOST_PORTS[port]) for port in ports)
        out.append(NodeExposure(T0, node, role, "running", f"lab-{node}", bindings))
    return out


def connects(exposures: list[NodeExposure], *, refused: int = 0) -> list[PortConnect]:
    """A successful connect per binding, except to the host port ``refused``."""
    return [PortConnect(T0 + 1, e.node, b.container_port, "127.0.0.1", b.host_port,
                        b.host_port != refused,
                        "" if b.host_port != refused else "ConnectionRefusedError")
            for e in exposures for b in e.bindings]


def judge(exposures: list[NodeExposure], probed: list[PortConnect] | None = None,
          documented=DOCUMENTED):
    return check_exposure(exposures, connects(exposures) if probed is None else probed,
                          documented, ROLES)


def failing(exposures: list[NodeExposure], probed: list[PortConnect] | None = None) -> str:
    """The details of a check that must fail, as one text."""
    result = judge(exposures, probed)
    assert result.verdict is Verdict.FAIL, result
    return "\n".join(result.details)


def with_bindings(
        exposures: list[NodeExposure], node: str, *bindings: PortBinding) -> list[NodeExposure]:
    return [replace(e, bindings=bindings) if e.node == node else e for e in exposures]


def test_the_documented_set_passes() -> None:
    """Six documented ports on loopback (stub_status too), each accepting a connection: pass."""
    result = judge(healthy())
    assert result.verdict is Verdict.PASS, result
    assert dict(result.values)["confirmed"] == 6
    assert dict(result.values)["containers"] == len(ROLES)


def test_a_backend_publishing_its_port_fails_naming_it() -> None:
    """A backend with 8000/tcp on 127.0.0.1 is undocumented exposure;
    the detail names node and port."""
    exposures = with_bindings(healthy(), "backend-2", PortBinding("8000/tcp", "127.0.0.1", 49001))
    result = judge(exposures)
    assert result.verdict is Verdict.FAIL
    assert any(d.startswith("backend-2 (backend) publishes 8000/tcp on 127.0.0.1:49001: "
                            "not documented")
               and "accepted a TCP connection" in d for d in result.details), result.details
    assert dict(result.values)["undocumented"] == 1


def test_every_interface_bindings_fail() -> None:
    """NGINX on 0.0.0.0 and on :: listens on every interface: both fail,
    and 80 is then missing on loopback."""
    exposures = with_bindings(healthy(), "nginx", PortBinding("80/tcp", "0.0.0.0", 40080),
                              PortBinding("80/tcp", "::", 40080),
                              PortBinding("443/tcp", "127.0.0.1", 40443))
    text = failing(exposures)
    assert "nginx (nginx) publishes 80/tcp on 0.0.0.0:40080: every interface" in text
    assert "nginx (nginx) publishes 80/tcp on [::]:40080: every interface" in text
    assert "nginx (nginx) publishes no 80/tcp on 127.0.0.1" in text
    assert dict(judge(exposures).values)["every_interface"] == 2


def test_a_missing_or_unanswered_port_fails() -> None:
    """Redis without its binding, and a PgBouncer port that refuses the connection, both fail."""
    exposures = with_bindings(healthy(), "redis")
    text = failing(exposures, connects(exposures, refused=HOST_PORTS["6432/tcp"]))
    assert "redis (redis) publishes no 6379/tcp on 127.0.0.1 (documented)" in text
    assert ("pgbouncer (pgbouncer) 6432/tcp on 127.0.0.1:46432: no TCP connection "
            "(ConnectionRefusedError)") in text


def test_helpers_host_network_and_missing_nodes_fail() -> None:
    """A sidecar that publishes, a node on the host's network and a node
    without a container all fail."""
    exposures = [e for e in healthy() if e.node != "backend-3"]
    exposures = [replace(e, network_mode="host") if e.node == "backend-1" else e for e in exposures]
    exposures.append(NodeExposure(T0, "lab-x-client-1", "", "running", "lab-x",
                                  (PortBinding("9000/tcp", "127.0.0.1", 49100),)))
    text = failing(exposures)
    assert "backend-1 (backend) runs in the host's network namespace" in text
    assert "lab-x-client-1 (helper) publishes 9000/tcp on 127.0.0.1:49100: not documented" in text
    assert "backend-3 (backend): no container" in text


def test_a_fixed_host_port_must_be_the_one_configured() -> None:
    """[publish] nginx_http = 8080 documents that host port; Docker reporting another fails."""
    documented = documented_ports(PublishConfig(nginx_http=8080))
    result = judge(healthy(), documented=documented)
    assert result.verdict is Verdict.FAIL
    assert any("[publish] fixes host port 8080" in d for d in result.details), result.details


def test_without_a_connect_or_a_reading_it_cannot_decide() -> None:
    """No TCP connect recorded: unknown (not confirmed); no container read at all: unknown."""
    assert judge(healthy(), []).verdict is Verdict.UNKNOWN
    assert judge([], []).verdict is Verdict.UNKNOWN
