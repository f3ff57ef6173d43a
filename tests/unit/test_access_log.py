"""Parsing the lab's NGINX access log into entries."""

from __future__ import annotations

import pytest

from lab.topology.access_log import parse_access_log, parse_access_log_line
from lab.topology.render import ACCESS_LOG_FIELDS, ACCESS_LOG_TAG

NODES = {"172.29.0.11:8000": "backend-1", "172.29.0.12:8000": "backend-2",
         "172.29.0.13:8000": "backend-3"}


def line(*fields: str, pid: str = "7", connect: str = "-", header: str = "-") -> str:
    """An access log line as NGINX writes it with the lab's log_format."""
    fields = (*fields, pid, connect, header)
    assert len(fields) == len(ACCESS_LOG_FIELDS)
    return "\t".join((ACCESS_LOG_TAG, *fields))


def test_single_attempt() -> None:
    """A plain proxied request yields one attempt resolved to its node."""
    (entry,) = parse_access_log(line(
        "1700000000.500", "0.004", "GET", "/health", "200", "172.29.0.12:8000", "200", "0.003",
        "-", "172.29.0.1", "abc-1"), NODES)
    assert entry.msec == 1700000000.5
    assert entry.started_at == pytest.approx(1700000000.496)
    assert entry.upstream_backends == ("backend-2",)
    assert entry.upstream_statuses == ("200",)
    assert entry.upstream_times_s == (0.003,)
    assert entry.limit_req_status == "-"
    assert entry.request_id == "abc-1"


def test_retried_request_lists_every_attempt() -> None:
    """A retry after a connect timeout keeps both attempts in order."""
    (entry,) = parse_access_log(line(
        "1700000002.010", "1.010", "GET", "/health", "200",
        "172.29.0.11:8000, 172.29.0.12:8000", "504, 200", "1.001, 0.009", "PASSED", "10.0.0.1",
        "-"), NODES)
    assert entry.upstream_backends == ("backend-1", "backend-2")
    assert entry.upstream_statuses == ("504", "200")
    assert entry.upstream_times_s == (1.001, 0.009)
    assert entry.request_id == ""


def test_group_separator_and_unknown_address() -> None:
    """' : ' between upstream groups splits like ', '; unmapped addresses become '?'."""
    (entry,) = parse_access_log(line(
        "1.0", "0.5", "POST", "/x", "502", "10.9.9.9:8000 : 172.29.0.13:8000", "502 : 200",
        "0.1 : -", "-", "-", "-"), NODES)
    assert entry.upstream_backends == ("?", "backend-3")
    assert entry.upstream_times_s == (0.1, None)


def test_no_live_upstreams_and_no_upstream() -> None:
    """NGINX logging the group name maps to 'backend'; '-' means no upstream at all."""
    entries = parse_access_log("\n".join([
        line("1.0", "0.000", "GET", "/", "502", "backend", "502", "0.000", "-", "-", "-"),
        line("2.0", "0.000", "GET", "/api/", "429", "-", "-", "-", "REJECTED", "-", "-"),
    ]), NODES)
    assert entries[0].upstream_backends == ("backend",)
    assert entries[1].upstream_addrs == () and entries[1].upstream_times_s == ()
    assert entries[1].limit_req_status == "REJECTED"


def test_other_lines_ignored_and_prefix_tolerated() -> None:
    """Error-log lines are skipped; a docker timestamp before the tag is tolerated."""
    text = "\n".join([
        "2024/01/01 00:00:00 [error] 7#7: *1 connect() failed (111: Connection refused)",
        "2024-01-01T00:00:00.000Z " + line("3.0", "0.001", "GET", "/", "200",
                                            "172.29.0.11:8000", "200", "0.001", "-", "-", "r"),
        "",
    ])
    (entry,) = parse_access_log(text, NODES)
    assert entry.request_id == "r"


def test_truncated_line_skipped_or_strict() -> None:
    """A tagged line cut short is skipped, or raises ValueError when strict."""
    text = ACCESS_LOG_TAG + "\t1.0\t0.1\tGET"
    assert parse_access_log(text, NODES) == []
    with pytest.raises(ValueError, match="line 1"):
        parse_access_log(text, NODES, strict=True)
    assert parse_access_log_line("no tag here", NODES) is None


def test_worker_and_connect_times() -> None:
    """$pid names the worker; $upstream_connect_time gives each attempt's connect, or None."""
    (entry,) = parse_access_log(line(
        "1700000002.010", "1.010", "GET", "/health", "200",
        "172.29.0.11:8000, 172.29.0.12:8000", "504, 200", "1.001, 0.009", "-", "10.0.0.1",
        "r", pid="31", connect="-, 0.001", header="-, 0.008"), NODES)
    assert entry.worker == 31
    assert entry.upstream_connect_s == (None, 0.001)
    assert entry.upstream_header_s == (None, 0.008)
