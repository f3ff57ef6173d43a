"""NGINX's access log, as the lab's ``log_format`` writes it, parsed into ``AccessLogEntry``.

A line is the tag ``LABLOG`` and then the tab-separated ``ACCESS_LOG_FIELDS`` of
``lab.topology.render``. Anything else on NGINX's stdout (or a prefix that ``docker logs``
adds before the tag) is ignored.

The upstream variables list every attempt: ``", "`` between servers tried within one upstream
group, ``" : "`` between groups (an internal redirect). NGINX writes ``-`` for "none", and the
upstream group's own name (``backend``) when it found no live server to try.

``upstream_attempts`` splits the entries into the tries they record, each with when it began
(a measurement both the checks and ``lab watch`` read).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lab.history import AccessLogEntry
from lab.topology.render import ACCESS_LOG_FIELDS, ACCESS_LOG_TAG

UNKNOWN_NODE = "?"
_TAG = ACCESS_LOG_TAG + "\t"
_SPLIT = re.compile(r", | : ")
# An address nginx connected to (ip:port, [v6]:port, unix:path) rather than a group name.
_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[0-9.]+):\d+$|^unix:")


def _list(value: str) -> tuple[str, ...]:
    value = value.strip()
    if value in ("", "-"):
        return ()
    return tuple(part.strip() for part in _SPLIT.split(value))


def _seconds(value: str) -> float | None:
    return None if value in ("", "-") else float(value)


def _node(address: str, addr_to_node: Mapping[str, str]) -> str:
    if address in addr_to_node:
        return addr_to_node[address]
    if _ADDRESS.match(address):
        return UNKNOWN_NODE
    # nginx logs the upstream group's name when no server of it was live.
    return address


def parse_access_log_line(line: str, addr_to_node: Mapping[str, str]) -> AccessLogEntry | None:
    """One access log line as an entry; None for a line without the tag; ValueError if malformed."""
    start = line.find(_TAG)
    if start < 0:
        return None
    fields = line[start + len(_TAG):].rstrip("\r\n").split("\t")
    if len(fields) != len(ACCESS_LOG_FIELDS):
        raise ValueError(f"expected {len(ACCESS_LOG_FIELDS)} fields after {ACCESS_LOG_TAG}, "
                         f"got {len(fields)}")
    (msec, request_time, method, uri, status, addrs, statuses, times, limit_req, remote,
     request_id, pid, connect_times, header_times) = fields
    upstream_addrs = _list(addrs)
    upstream_statuses = _list(statuses)
    upstream_times = tuple(_seconds(t) for t in _list(times))
    upstream_connect = tuple(_seconds(t) for t in _list(connect_times))
    upstream_header = tuple(_seconds(t) for t in _list(header_times))
    # The three lists describe the same attempts; pad defensively so indexes line up.
    n = len(upstream_addrs)
    upstream_statuses = (upstream_statuses + ("-",) * n)[:n]
    upstream_times = (upstream_times + (None,) * n)[:n]
    upstream_connect = (upstream_connect + (None,) * n)[:n]
    upstream_header = (upstream_header + (None,) * n)[:n]
    return AccessLogEntry(
        msec=float(msec),
        request_time_s=float(request_time),
        method=method,
        uri=uri,
        status=int(status),
        upstream_addrs=upstream_addrs,
        upstream_backends=tuple(_node(a, addr_to_node) for a in upstream_addrs),
        upstream_statuses=upstream_statuses,
        upstream_times_s=upstream_times,
        limit_req_status=limit_req,
        remote_addr=remote,
        request_id="" if request_id == "-" else request_id,
        worker=int(pid) if pid.isdigit() else 0,
        upstream_connect_s=upstream_connect,
        upstream_header_s=upstream_header,
    )


def parse_access_log(text: str, addr_to_node: Mapping[str, str], *,
                     strict: bool = False) -> list[AccessLogEntry]:
    """Every tagged line of ``text`` as an entry, in order; malformed ones skipped unless strict."""
    # A tagged line can be cut short when NGINX is killed mid-write; that must not sink a run.
    entries: list[AccessLogEntry] = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            entry = parse_access_log_line(line, addr_to_node)
        except ValueError as exc:
            if strict:
                raise ValueError(f"access log line {number}: {exc}: {line!r}") from None
            continue
        if entry is not None:
            entries.append(entry)
    return entries


@dataclass(frozen=True)
class UpstreamAttempt:
    """One try of one upstream server, as reconstructed from an access log entry."""

    started_at: float
    backend: str
    status: str
    duration_s: float | None
    entry: AccessLogEntry


def upstream_attempts(entries: Iterable[AccessLogEntry]) -> list[UpstreamAttempt]:
    """Every upstream attempt in the log, by start time.

    Attempt k of an entry starts at the entry's start plus the response times of the
    attempts before it ("-" counts as 0: nginx logs it when no connection was made).
    """
    attempts: list[UpstreamAttempt] = []
    for entry in entries:
        at = entry.started_at
        for backend, status, duration in zip(entry.upstream_backends, entry.upstream_statuses,
                                             entry.upstream_times_s, strict=False):
            attempts.append(UpstreamAttempt(at, backend, status, duration, entry))
            at += duration or 0.0
    attempts.sort(key=lambda a: a.started_at)
    return attempts
