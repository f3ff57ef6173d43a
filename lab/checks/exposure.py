"""Exposure: from the host, no node is reachable except through the ports the lab documents.

The documented set (README "127.0.0.1 (ephemeral ports)", lab.toml ``[publish]``, handed to
the check in the expectations record): NGINX's
80 and 443, PgBouncer, PostgreSQL and Redis, each published on 127.0.0.1 only, on the fixed
host port ``[publish]`` names or an ephemeral one; the backends and every helper container
(fault sidecars, second clients) publish nothing. A binding on 0.0.0.0 or ``::`` listens on
every interface of the host, so the node is reachable from the network, not just from this
machine; a container on the host's network namespace exposes every port it listens on.

The records are what Docker reports for every container carrying the lab's label
(``NodeExposure``), judged against the documented ports; each published port must also
accept a TCP connection on 127.0.0.1 (``PortConnect``), so a documented port that Docker
reports but nothing answers on is caught too.

What this does not show: on a Linux host the lab's bridge subnet is routed, so the host can
reach container addresses directly. The lab never sends traffic to a container address, so
that route is neither used nor tested here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from lab.checks.base import CheckResult, Verdict
from lab.checks.registry import CheckContext, CheckDef, NoParams, register
from lab.expectations import DocumentedPort
from lab.history import NodeExposure, PortBinding, PortConnect

__all__ = ["LOOPBACK", "check_exposure"]

NAME = "exposure"
LOOPBACK = "127.0.0.1"
_SHOWN = 20


def _where(binding: PortBinding) -> str:
    host = f"[{binding.host_ip}]" if ":" in binding.host_ip else binding.host_ip
    return f"{host}:{binding.host_port or '?'}"


def check_exposure(exposures: Sequence[NodeExposure], connects: Sequence[PortConnect],
                   documented: Sequence[DocumentedPort], nodes: Mapping[str, str]) -> CheckResult:
    """Whether every lab container publishes exactly its documented ports, on 127.0.0.1, and
    each answers.

    ``nodes``: node name -> role, the topology the configuration describes (a node without a
    container is reported: its documented ports are missing).
    """
    by_role: dict[str, dict[str, DocumentedPort]] = defaultdict(dict)
    for port in documented:
        by_role[port.role][port.container_port] = port
    expected = (f"published: {', '.join(f'{p.role} {p.container_port}' for p in documented)}, "
                f"each on {LOOPBACK} only and accepting a TCP connection there; "
                "nothing else (backends and helper containers publish nothing)")
    fixed = [f"{p.role} {p.container_port} -> {p.host_port}" for p in documented if p.host_port]
    derivation = ("README: every node behind 127.0.0.1 (ephemeral ports); lab.toml [publish]"
                  + (f" fixes {', '.join(fixed)}" if fixed else ": all ephemeral")
                  + "; a binding on 0.0.0.0 or :: listens on every host interface; network "
                  "mode host exposes every listening port")
    if not exposures:
        return CheckResult(NAME, Verdict.UNKNOWN, "no container's published ports were read",
                           expected, derivation)
    latest: dict[str, NodeExposure] = {}
    for exposure in sorted(exposures, key=lambda e: e.at):
        latest[exposure.node] = exposure
    answered = {(c.node, c.container_port, c.port): c for c in connects}

    problems: list[str] = []
    undocumented = wide = missing = refused = 0
    confirmed = 0
    for node, role in nodes.items():
        if node not in latest:
            problems.append(f"{node} ({role}): no container; "
                            f"{len(by_role.get(role, {}))} documented port(s) missing")
            missing += len(by_role.get(role, {}))
    for node, exposure in sorted(latest.items()):
        allowed = by_role.get(exposure.role, {}) if exposure.role else {}
        what = exposure.role or "helper"
        if exposure.network_mode == "host":
            problems.append(f"{node} ({what}) runs in the host's network namespace: every port it "
                            "listens on is exposed")
            wide += 1
        seen_on_loopback: set[str] = set()
        for binding in exposure.bindings:
            port = allowed.get(binding.container_port)
            connect = answered.get((node, binding.container_port, binding.host_port))
            reached = (" and accepted a TCP connection on 127.0.0.1"
                       if connect and connect.connected else "")
            if port is None:
                undocumented += 1
                problems.append(f"{node} ({what}) publishes {binding.container_port} on "
                                f"{_where(binding)}: not documented for {what}{reached}")
                continue
            if binding.host_ip != LOOPBACK:
                wide += 1
                problems.append(f"{node} ({what}) publishes {binding.container_port} on "
                                f"{_where(binding)}: every interface, documented {LOOPBACK} only")
                continue
            seen_on_loopback.add(binding.container_port)
            if port.host_port and binding.host_port != port.host_port:
                problems.append(f"{node} ({what}) publishes {binding.container_port} on "
                                f"{_where(binding)}; [publish] fixes host port {port.host_port}")
            if connect is None and not connects:
                continue  # nothing was probed at all: judged UNKNOWN below, not per port
            if connect is None:
                problems.append(f"{node} ({what}) {binding.container_port} on {_where(binding)}: "
                                "no TCP connect was tried")
                refused += 1
            elif not connect.connected:
                problems.append(f"{node} ({what}) {binding.container_port} on {_where(binding)}: "
                                f"no TCP connection ({connect.detail or 'refused'})")
                refused += 1
            else:
                confirmed += 1
        for container_port in sorted(set(allowed) - seen_on_loopback):
            missing += 1
            problems.append(f"{node} ({what}) publishes no {container_port} on {LOOPBACK} "
                            "(documented)")

    bindings = sum(len(e.bindings) for e in latest.values())
    values = (("containers", float(len(latest))), ("bindings", float(bindings)),
              ("confirmed", float(confirmed)), ("undocumented", float(undocumented)),
              ("every_interface", float(wide)), ("missing", float(missing)),
              ("not_connected", float(refused)))
    measured = (f"{len(latest)} container(s), {bindings} published binding(s); {confirmed} "
                f"documented port(s) on {LOOPBACK} accepted a connection; {undocumented} "
                f"undocumented, {wide} on every interface, {missing} missing, {refused} not "
                "connected")
    if problems:
        verdict = Verdict.FAIL
    elif not connects:
        verdict = Verdict.UNKNOWN
        problems.append("no TCP connect from the host was recorded: the ports were not confirmed")
    else:
        verdict = Verdict.PASS
    shown = problems[:_SHOWN] + ([f"... {len(problems) - _SHOWN} more"]
                                 if len(problems) > _SHOWN else [])
    return CheckResult(NAME, verdict, measured, expected, derivation, tuple(shown),
                       values)


# -- registration -------------------------------------------------------------------------------


def _judge(ctx: CheckContext, params: NoParams) -> CheckResult:
    history = ctx.history
    return check_exposure(history.exposure, history.port_connects,
                          ctx.expectations.documented_ports, ctx.expectations.roles)


register(CheckDef(
    name=NAME, params=NoParams, judge=_judge,
    summary="from the host, only the documented ports are published, on 127.0.0.1, "
            "and each answers"))
