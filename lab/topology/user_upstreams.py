"""The user's upstream blocks mapped onto the lab's backends (pure, no Docker).

The backend pool's distinct addresses become backend-1..N, in file order; the servers of the
other upstream blocks reach the same backends where they name the pool's hosts, and a closed
port of NGINX's own loopback where they name another service. Which server lines the lab's
copy must rewrite, and why, comes with the mapping (``Backends``); the rewriting itself is
``user_nginx_edits.rewrite_servers``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from lab.errors import ConfigError
from lab.topology.nginx_tree import Directive

OTHER_NODES = ("postgres", "pgbouncer", "redis", "nginx")
# Where the servers of an upstream block that is not the backend pool point in the lab's copy:
# a closed port on NGINX's own loopback (the discard port), refused at once.
ABSENT_SERVICE = "127.0.0.1:9"
_NODE_NAME = re.compile(r"backend-[1-9]\d*")


def _split_address(address: str) -> tuple[str, int]:
    if address.startswith("["):
        host, _, port = address[1:].partition("]:")
        return host, int(port) if port.isdigit() else 80
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, 80
    if not port.isdigit():
        raise ValueError(port)
    return host, int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _aliasable(host: str, node: str) -> bool:
    """Whether Docker's DNS can answer ``host`` with ``node``'s container: a host name, and
    not another lab node's name."""
    return not _is_ip(host) and (not _NODE_NAME.fullmatch(host) or host == node)


@dataclass(frozen=True)
class ServerLine:
    """One ``server`` line of an upstream block, its address split."""

    directive: Directive
    block: str
    host: str
    port: int
    order: int                  # its place in the tree, in the order NGINX reads it

    @property
    def address(self) -> str:
        """The address as written."""
        return self.directive.args[0]

    @property
    def where(self) -> str:
        """``file:line`` of the line."""
        return f"{self.directive.file}:{self.directive.line}"


def _server_line(server: Directive, block: str, order: int) -> ServerLine:
    """One server line, its address checked for what the lab can give a backend."""
    address = server.args[0]
    where = f"{server.file}:{server.line}"
    if address.startswith("unix:"):
        raise ConfigError(f"{where}: upstream server {address}: a unix socket; the "
                          "lab runs each backend in its own container",
                          hint="name backends by host:port")
    if "$" in address:
        raise ConfigError(f"{where}: upstream server {address}: a variable; the lab "
                          "maps fixed host names and addresses only")
    try:
        host, port = _split_address(address)
    except ValueError:
        raise ConfigError(f"{where}: upstream server {address}: not host:port") from None
    if host in OTHER_NODES:
        raise ConfigError(f"{where}: upstream server {address}: {host!r} is the "
                          f"lab's own {host} node, not a backend")
    return ServerLine(server, block, host, port, order)


def upstream_servers(tree: Sequence[Directive]
                     ) -> dict[str, tuple[Directive, list[ServerLine]]]:
    """Upstream name -> (its block, its server lines), every address checked for what the
    lab can give a backend; ConfigError when no block names a server."""
    blocks: dict[str, tuple[Directive, list[ServerLine]]] = {}
    order = 0
    for http in (d for d in tree if d.name == "http"):
        for upstream in (d for d in http.block or () if d.name == "upstream" and d.args):
            servers: list[ServerLine] = []
            for server in (d for d in upstream.block or () if d.name == "server" and d.args):
                servers.append(_server_line(server, upstream.args[0], order))
                order += 1
            blocks[upstream.args[0]] = (upstream, servers)
    if not any(servers for _, servers in blocks.values()):
        raise ConfigError("no upstream block names a server: the lab needs the backends "
                          "your NGINX proxies to", hint="add an upstream block")
    return blocks


@dataclass(frozen=True)
class Backends:
    """How the upstream blocks' addresses become the lab's backends."""

    aliases: dict[str, list[str]]              # node -> host names resolving to it
    nodes: dict[str, str]                      # address (as written, and as rewritten) -> node
    port: int                                  # the port every backend listens on
    rewrites: tuple[tuple[ServerLine, str], ...]  # lines whose address the copy replaces
    notes: tuple[str, ...]


@dataclass
class _Mapping:
    """The mapping as it is built: the pool's nodes, and what each server line becomes."""

    port: int
    node_of: dict[tuple[str, int], str]        # the pool's (host, port) -> node
    host_node: dict[str, str]                  # the pool's host -> its first node
    rewritten: dict[tuple[str, int], str]      # the pool's addresses the copy replaces
    nodes: dict[str, str] = field(default_factory=dict)
    rewrites: list[tuple[ServerLine, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _pool_nodes(distinct: Sequence[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """The pool's distinct addresses as backend-1..N, in file order."""
    # A host already named like one of the lab's nodes keeps that node, so that its name
    # never resolves to two containers; the others take the free names in file order.
    names = [f"backend-{i}" for i in range(1, len(distinct) + 1)]
    node_of: dict[tuple[str, int], str] = {}
    for key in distinct:
        if key[0] in names and key[0] not in node_of.values():
            node_of[key] = key[0]
    free = iter(n for n in names if n not in node_of.values())
    for key in distinct:
        if key not in node_of:
            node_of[key] = next(free)
    return node_of


def _new_mapping(distinct: Sequence[tuple[str, int]], port: int) -> _Mapping:
    node_of = _pool_nodes(distinct)
    host_node: dict[str, str] = {}
    rewritten: dict[tuple[str, int], str] = {}
    for key in distinct:
        node = node_of[key]
        host = key[0]
        taken = host_node.setdefault(host, node) != node
        if taken or not _aliasable(host, node) or key[1] != port:
            rewritten[key] = f"{node}:{port}"
    return _Mapping(port, node_of, host_node, rewritten)


def _map_pool(mapping: _Mapping, servers: Sequence[ServerLine]) -> None:
    for server in servers:
        key = (server.host, server.port)
        mapping.nodes[server.address] = mapping.node_of[key]
        if key in mapping.rewritten:
            mapping.rewrites.append((server, mapping.rewritten[key]))


def _map_other(mapping: _Mapping, name: str, block: Directive,
               servers: Sequence[ServerLine]) -> list[ServerLine]:
    """Another upstream block's lines mapped where they name the pool's hosts; the lines that
    name another service are returned."""
    port = mapping.port
    reached: list[str] = []
    absent: list[ServerLine] = []
    for server in servers:
        key = (server.host, server.port)
        if key in mapping.node_of:
            node = mapping.node_of[key]
            new = mapping.rewritten.get(key)
        elif server.host in mapping.host_node:
            # The pool's hosts on another port (a websocket pool on the same servers): the
            # same backends, on the one port they listen on.
            node = mapping.host_node[server.host]
            new = f"{node}:{port}" if not _aliasable(server.host, node) \
                or server.port != port else None
        else:
            # Another service (an auth API, a frontend): not part of the rehearsal. Its
            # servers point at a closed port of NGINX's own loopback, so NGINX starts (it
            # resolves every upstream host at start) and its locations answer 502 at once.
            absent.append(server)
            continue
        mapping.nodes[server.address] = node
        if new is not None:
            mapping.rewrites.append((server, new))
        reached.append(node)
    if reached:
        moved = [s for s in servers if s.port != port]
        mapping.notes.append(
            f"upstream {name} ({block.file}:{block.line}) reaches "
            f"{', '.join(dict.fromkeys(reached))}, the pool's backends"
            + (f"; they listen on {port} only, so its port "
               f"{', '.join(sorted({str(s.port) for s in moved}))} reads {port} in "
               "the lab's copy" if moved else ""))
    return absent


def _map_absent(mapping: _Mapping, absent: Sequence[tuple[str, Directive, ServerLine]]) -> None:
    mapping.rewrites += [(server, ABSENT_SERVICE) for _, _, server in absent]
    for name in dict.fromkeys(name for name, _, _ in absent):
        other = next(o for n, o, _ in absent if n == name)
        mapping.notes.append(
            f"upstream {name} ({other.file}:{other.line}) is another service, not the "
            f"backend pool: the lab's copy points its servers at {ABSENT_SERVICE} "
            "(nothing listens there), so NGINX starts and the locations proxying to it "
            "answer 502")


def _explain_rewrites(mapping: _Mapping) -> None:
    """One note per file and reason for the addresses the copy replaces; each new address
    maps to its node."""
    port = mapping.port
    why: dict[tuple[str, str], list[tuple[ServerLine, str]]] = {}
    for server, new in mapping.rewrites:
        if new == ABSENT_SERVICE:
            continue
        reason = ("Docker names containers, it cannot give one your IP address"
                  if _is_ip(server.host) else
                  f"each backend container listens on one port, {port}"
                  if server.port != port else
                  "one host name cannot stand for several backend containers")
        why.setdefault((server.directive.file, reason), []).append((server, new))
        mapping.nodes[new] = mapping.nodes[server.address]
    for (file, reason), lines in why.items():
        mapping.notes.append(f"{file}: the lab's copy reads " + ", ".join(
            f"{new} for {server.address} (line {server.directive.line})"
            for server, new in lines) + f", on the same lines: {reason}")


def _aliases(mapping: _Mapping) -> dict[str, list[str]]:
    """Node -> the host names Docker's DNS answers with it; every name a node goes by maps
    to it."""
    aliases: dict[str, list[str]] = {}
    for host, node in mapping.host_node.items():
        mapping.nodes.setdefault(host, node)
        if _aliasable(host, node) and host != node:
            aliases.setdefault(node, []).append(host)
    for node in mapping.node_of.values():
        mapping.nodes.setdefault(node, node)
        mapping.nodes.setdefault(f"{node}:{mapping.port}", node)
    return aliases


def backends(tree: Sequence[Directive], pool: str, replicas: int) -> Backends:
    """The backend pool's distinct addresses as backend-1..N (in file order), the other
    blocks' servers as the same backends, and the lines whose address must be rewritten.

    A host name becomes a network alias of its backend (Docker's DNS answers it), and the
    line stays as written. An address Docker cannot alias is rewritten on its own line in the
    container copy to ``backend-N:PORT`` (line numbers stay the user's): an IP address (each
    lab has its own subnet, and 127.0.0.1 is NGINX's own loopback), a host already taken by
    another backend (``app:8081``, ``app:8082``: one host, several servers), and a port other
    than the pool's first (each backend container listens on one port: the reference backend
    reads one LAB_PORT, a contract's image one port_env). Rewriting keeps one mechanism for
    all of them; NGINX's choices (order, weights, failure counting) depend on the server
    lines, not on the numbers in them. Giving each backend its own port instead would
    change every consumer of the one backend port (plan, probes, the access-log address map)
    and still fail for a contract without port_env.
    """
    blocks = upstream_servers(tree)
    block, servers = blocks[pool]
    if not servers:
        raise ConfigError(f"{block.file}:{block.line}: upstream {pool}, the backend pool, "
                          "names no server")
    port = servers[0].port
    distinct = list(dict.fromkeys((s.host, s.port) for s in servers))
    if len(distinct) != replicas:
        listed = ", ".join(f"{h}:{p}" for h, p in distinct)
        raise ConfigError(
            f"{block.file}:{block.line}: upstream {pool}, the backend pool, names "
            f"{len(distinct)} backend address{'es' * (len(distinct) != 1)} ({listed}); the lab "
            f"runs {replicas} backends "
            "and maps each address to one",
            hint=f"set [backend] replicas = {len(distinct)} in lab.toml, or name only your "
            "backends in this upstream block")
    mapping = _new_mapping(distinct, port)
    mapping.notes.append(f"upstream {pool} ({block.file}:{block.line}) is the backend pool: "
                         + ", ".join(f"{h}:{p} -> {mapping.node_of[(h, p)]}"
                                     for h, p in distinct))
    _map_pool(mapping, servers)
    absent = [(name, other, server) for name, (other, others) in blocks.items()
              if name != pool for server in _map_other(mapping, name, other, others)]
    _map_absent(mapping, absent)
    _explain_rewrites(mapping)
    aliases = _aliases(mapping)
    return Backends(aliases, mapping.nodes, port, tuple(mapping.rewrites),
                    tuple(mapping.notes))
