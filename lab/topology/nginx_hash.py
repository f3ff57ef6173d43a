"""Which backend NGINX's ``hash`` and ``ip_hash`` send one client address to (pure, no Docker).

The lab's clients all reach NGINX from one address: the lab network's gateway, through
Docker's published ports. A pool balanced on the client address therefore sends the whole
traffic to one backend, and a scenario that breaks backend-1 judges nothing unless that one
backend is backend-1. The lab picks the gateway (docs/semantics.md §1, "Balancing on the
client address"): an address of its own network that NGINX's hash maps to backend-1. The
arithmetic is NGINX's own (ngx_http_upstream_hash_module.c and
ngx_http_upstream_ip_hash_module.c, 1.22):

- ``hash KEY consistent``: every primary server line gets ``160 x weight`` points on a ring,
  point j = crc32(host "\\0" port prev), prev being point j-1 (0 for the first, as 4 bytes
  little-endian); a key goes to the first point at or above crc32(key), wrapping.
- ``hash KEY``: ``((crc32(KEY) >> 16) & 0x7fff) % total_weight`` walks the server lines by
  weight; a line that is down is passed by rehashing with the try number prefixed.
- ``ip_hash``: ``h = 89; h = (h x 113 + octet) % 6271`` over the address's first three octets,
  then ``h % total_weight`` walks the lines by weight; a down line continues the chain.

Only the first choice of a healthy pool is modelled: that is what decides where the traffic
goes before any fault. ``down`` lines count in the total weight and are passed, as in NGINX;
backup lines are not in the ring or the walk.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import struct
import zlib
from collections.abc import Iterable, Sequence

from lab.expectations import UpstreamPolicy, UpstreamServer

# The keys that are the client's address, the only ones the lab can steer.
ADDRESS_KEYS = ("$remote_addr", "$binary_remote_addr")
_TRIES = 20                      # NGINX falls back to round robin after 20 failed picks
_POINTS_PER_WEIGHT = 160


def steerable(policy: UpstreamPolicy) -> bool:
    """Whether the pool balances on the client address alone (so the lab's gateway decides)."""
    if policy.balancing == "ip_hash":
        return True
    return policy.balancing == "hash" and policy.hash_key in ADDRESS_KEYS


def _primaries(policy: UpstreamPolicy) -> list[UpstreamServer]:
    return [m for m in policy.members if not m.backup]


def _key(policy: UpstreamPolicy, address: ipaddress.IPv4Address) -> bytes:
    return address.packed if policy.hash_key == "$binary_remote_addr" else str(address).encode()


def _walk(servers: Sequence[UpstreamServer], w: int) -> UpstreamServer:
    for server in servers:
        if w < server.weight:
            return server
        w -= server.weight
    raise AssertionError("w is below the total weight")


@functools.lru_cache(maxsize=8)     # one ring per pool; gateway_for asks it for every address
def _ring(servers: tuple[UpstreamServer, ...]) -> tuple[list[int], list[str]]:
    points: dict[int, str] = {}
    chained: list[tuple[int, str]] = []
    for server in servers:
        host, colon, port = server.address.rpartition(":")
        if not colon or not port.isdigit():
            host, port = server.address, ""
        base = host.encode() + b"\0" + port.encode()
        previous = 0
        for _ in range(server.weight * _POINTS_PER_WEIGHT):
            value = zlib.crc32(base + struct.pack("<I", previous))
            chained.append((value, server.address))
            previous = value
    # NGINX sorts the points and keeps the first of equal hashes (qsort is not stable: a tie
    # between two servers is left undecided here, and is 1 in 2^32 per pair of points).
    for value, address in sorted(chained, key=lambda p: p[0]):
        points.setdefault(value, address)
    hashes = sorted(points)
    return hashes, [points[h] for h in hashes]


def first_choice(policy: UpstreamPolicy, address: ipaddress.IPv4Address) -> str | None:
    """The node NGINX first sends a request from ``address`` to, in a healthy pool; None when
    the pool does not balance on the client address or NGINX would fall back to round robin."""
    if not steerable(policy):
        return None
    if policy.balancing == "ip_hash":
        return ip_hash_choice(policy, address)
    return hash_choice(policy, _key(policy, address))


def ip_hash_choice(policy: UpstreamPolicy, address: ipaddress.IPv4Address) -> str | None:
    """``ip_hash``'s first choice for a client address (None: round robin decides)."""
    servers = _primaries(policy)
    if len(servers) < 2 or all(s.down for s in servers):
        return None
    total = sum(s.weight for s in servers)
    h = 89
    for _ in range(_TRIES + 1):
        for octet in address.packed[:3]:
            h = (h * 113 + octet) % 6271
        server = _walk(servers, h % total)
        if not server.down:
            return server.node
    return None


def hash_choice(policy: UpstreamPolicy, key: bytes) -> str | None:
    """``hash``'s first choice for a key's value, modulo or ``consistent`` as the policy says
    (None: round robin decides, or two lines of one address share the point)."""
    servers = _primaries(policy)
    live = [s for s in servers if not s.down]
    if not live:
        return None
    if policy.hash_consistent:
        hashes, owners = _ring(tuple(servers))
        index = bisect.bisect_left(hashes, zlib.crc32(key))
        for step in range(len(hashes)):
            owner = owners[(index + step) % len(hashes)]
            matching = {s.node for s in live if s.address == owner}
            if len(matching) == 1:
                return matching.pop()
            if matching:
                return None      # two lines with one address: their weights decide
        return None
    if len(servers) < 2:
        return None
    total = sum(s.weight for s in servers)
    accumulated = 0
    for rehash in range(_TRIES + 1):
        prefix = str(rehash).encode() if rehash else b""
        accumulated += (zlib.crc32(prefix + key) >> 16) & 0x7FFF
        server = _walk(servers, accumulated % total)
        if not server.down:
            return server.node
    return None


def gateway_for(policy: UpstreamPolicy, candidates: Iterable[ipaddress.IPv4Address],
                target: str) -> ipaddress.IPv4Address | None:
    """The first of ``candidates`` that NGINX's hash sends to ``target`` (so the choice is the
    same every time); None when none does (ip_hash reads only the first three octets: the
    subnet decides)."""
    return next((a for a in candidates if first_choice(policy, a) == target), None)
