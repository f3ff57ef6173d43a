"""The live view's pure parts: shares over the window, NGINX's tries and the ejection it shows,
stub_status, the sparkline, and snapshots that serialise and read back the same."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from lab.engine import ContainerInfo
from lab.history import AccessLogEntry, Outcome, RequestRecord
from lab.watch.model import (
    SERIES_BUCKETS,
    FaultView,
    NginxView,
    Snapshot,
    ejection_after,
    nginx_view,
    node_views,
    parse_stub_status,
    probe_view,
    readiness_detail,
)
from lab.watch.panels import sparkline

NOW = 1_700_000_100.5
BACKENDS = ("backend-1", "backend-2", "backend-3")


def _request(i: int, sent_at: float, backend: str | None, status: int | None = 200,
             latency: float | None = 0.004, outcome: Outcome = Outcome.OK) -> RequestRecord:
    return RequestRecord(i, "watch", "GET", "/health", sent_at, sent_at, latency, status, backend,
                         outcome)


def _stream(start: float, end: float, rate: float, down: str | None = None,
            down_from: float = math.inf) -> list[RequestRecord]:
    """Round robin at ``rate`` over the backends; ``down`` answers nothing from ``down_from``."""
    out, i, t = [], 0, start
    while t < end:
        backend = BACKENDS[i % 3]
        if backend == down and t >= down_from:
            backend = BACKENDS[(i + 1) % 3]   # NGINX retried it on the next one
        out.append(_request(i, t, backend))
        i, t = i + 1, start + (i + 1) / rate
    return out


def test_shares_statuses_and_latency_over_the_window() -> None:
    """Only requests sent in the window count; each backend gets a third of the ok answers."""
    records = _stream(NOW - 40, NOW, 20)
    records.append(_request(9999, NOW - 1.2, None, status=None, latency=None,
                            outcome=Outcome.UNKNOWN))
    view = probe_view(records, NOW, 10.0, BACKENDS, rate_per_s=20, path="/health",
                      total=len(records))
    assert view.sent == 201 and view.ok == 200 and view.unknown == 1 and view.failed == 0
    assert dict(view.statuses) == {"200": 200, "no answer": 1}
    assert all(abs(b.share - 1 / 3) < 0.01 for b in view.backends)
    assert view.p50_ms == pytest.approx(4.0) and view.p99_ms == pytest.approx(4.0)
    for backend in view.backends:
        assert len(backend.series) == SERIES_BUCKETS
        assert backend.per_s in (6.0, 7.0)      # 20 req/s over three backends
        assert backend.last_ok_at is not None and NOW - backend.last_ok_at < 0.2


def test_a_dead_backend_answers_nothing_at_once_and_its_share_drains() -> None:
    """After a kill its answers per second are 0 from the next whole second; the share over the
    window falls as the window slides past the kill."""
    kill = NOW - 4.0
    records = _stream(NOW - 40, NOW, 20, down="backend-1", down_from=kill)
    view = probe_view(records, NOW, 10.0, BACKENDS, rate_per_s=20, path="/health", total=0)
    dead = view.backends[0]
    assert dead.per_s == 0.0
    assert dead.series[-3:] == (0, 0, 0)
    assert 0.15 < dead.share < 0.25            # 6 of the 10 s still had it
    later = probe_view(records, NOW + 6.5, 10.0, BACKENDS, rate_per_s=20, path="/", total=0)
    assert later.backends[0].share == 0.0
    assert later.backends[0].last_ok_at < kill


def _entry(start: float, tries: list[tuple[str, str, float]], status: int = 200) -> AccessLogEntry:
    total = sum(duration for _, _, duration in tries)
    return AccessLogEntry(start + total, total, "GET", "/health", status,
                          tuple(f"10.0.0.{i}:8000" for i, _ in enumerate(tries)),
                          tuple(name for name, _, _ in tries),
                          tuple(code for _, code, _ in tries),
                          tuple(duration for _, _, duration in tries), "-")


def test_nginx_view_counts_tries_failures_retries_and_the_ejection() -> None:
    """Each try of each request counts for its server; a killed server's failed tries come in a
    run, then nothing: the ejection is the run's last try, settled once a quiet gap followed."""
    kill = NOW - 8.0
    entries = []
    for k in range(40):
        t = NOW - 9.5 + k * 0.2
        if k % 3 == 0 and kill <= t < kill + 1.2:
            entries.append(_entry(t, [("backend-1", "504", 1.0), ("backend-2", "200", 0.002)]))
        elif k % 3 == 0 and t >= kill:
            entries.append(_entry(t, [("backend-3", "200", 0.002)]))
        else:
            entries.append(_entry(t, [(BACKENDS[k % 3], "200", 0.002)]))
    entries.append(_entry(NOW - 1.0, [("backend", "502", 0.0)], status=502))  # no live upstream
    fault = FaultView(target="backend-1", kind="kill", params="", since=kill, by="lab break",
                      state="in place")
    view = nginx_view(entries, NOW, 10.0, BACKENDS, [fault], gap_s=1.0, lag_s=2.0)
    one = view.upstreams[0]
    assert one.failed == 2 and one.tries == 5     # three answered before the kill
    assert view.retried == 2 and view.no_live_upstream == 1
    assert view.requests_per_s == pytest.approx(41 / 9.5, rel=0.01)   # the log covers 9.5 s
    assert one.fault_since == kill and one.ejection_settled
    assert one.ejected_after_s == pytest.approx(0.9, abs=0.01)
    assert view.upstreams[1].failed == 0
    again = nginx_view([], NOW, 10.0, BACKENDS, [fault], settled={("backend-1", kill): 0.9})
    assert again.upstreams[0].ejected_after_s == 0.9 and again.upstreams[0].ejection_settled


@pytest.mark.parametrize(("tries", "now", "expected"), [
    ([], 100.5, (None, False)),                 # nothing logged yet: a try may still be pending
    ([], 110.0, (None, True)),                  # nothing for long: it was out already
    ([100.2, 100.5, 100.9], 102.0, (0.9, False)),   # the quiet time is still within the lag
    ([100.2, 100.5, 100.9], 104.0, (0.9, True)),
    ([100.2, 100.5, 100.9, 111.0], 111.5, (0.9, True)),   # a later re-probe is not the run
    ([99.0, 100.3], 104.0, (0.3, True)),        # tries before the fault do not count
])
def test_ejection_after(tries: list[float], now: float,
                        expected: tuple[float | None, bool]) -> None:
    """The first run of tries after the fault ends at the first gap longer than gap_s."""
    ejected, settled = ejection_after(tries, 100.0, now, gap_s=1.0, lag_s=2.0)
    assert (None if ejected is None else round(ejected, 3), settled) == expected


def test_stub_status_and_its_rate() -> None:
    """NGINX's stub_status page reads as numbers; the rate is the requests counter's slope."""
    page = ("Active connections: 3 \nserver accepts handled requests\n 77 77 622 \n"
            "Reading: 0 Writing: 1 Waiting: 2 \n")
    first = parse_stub_status(page, 10.0)
    assert (first.active, first.accepts, first.handled, first.requests) == (3, 77, 77, 622)
    assert (first.reading, first.writing, first.waiting) == (0, 1, 2)
    second = parse_stub_status(page.replace(" 622 ", " 642 "), 11.0, first)
    assert second.requests_per_s == pytest.approx(20.0)
    with pytest.raises(ValueError, match="not a stub_status page"):
        parse_stub_status("<html>404</html>", 12.0)


def test_sparkline() -> None:
    """One block per value, scaled to the top given (or the largest); nothing is a space."""
    assert sparkline([0, 1, 2, 4]) == " ▃▅█"
    assert sparkline([4, 4], top=8) == "▅▅"
    assert sparkline([]) == ""
    assert sparkline([0, 0]) == "  "


def test_a_stopped_node_is_not_ready_whatever_it_said_before() -> None:
    """Docker's state wins over a readiness answer taken while it still ran."""
    info = ContainerInfo(id="x", name="lab-x-backend-1", status="exited", labels={},
                         started_at=datetime.now(UTC), ip_address=None, published={}, env={},
                         exit_code=137)
    views = node_views({"backend-1": "backend", "redis": "redis"}, {info.name: info}, "x",
                       {"backend-1": (True, "200")})
    assert [(v.name, v.state, v.ready) for v in views] == [("backend-1", "exited", False),
                                                           ("redis", "missing", False)]


def test_a_snapshot_serialises_and_reads_back() -> None:
    """--json prints typed records; what it prints reads back into the same snapshot."""
    records = _stream(NOW - 12, NOW, 20)
    snapshot = Snapshot(
        at=NOW, lab="x", ends_at=NOW + 600, nodes=(), faults=(),
        probe=probe_view(records, NOW, 10.0, BACKENDS, rate_per_s=20, path="/health", total=240),
        nginx=NginxView(window_s=10.0, requests=0, requests_per_s=0.0, retried=0,
                        no_live_upstream=0, statuses=(), upstreams=()),
        stub_status=None, locks=None, pool=None, errors=(("pool", "TimeoutError"),))
    assert Snapshot.model_validate_json(snapshot.model_dump_json()) == snapshot


def test_readiness_details_are_made_short() -> None:
    """A backend's JSON answer becomes the status and what failed; other details stay."""
    body = '{"status":"not_ready","checks":{"database":"ok","redis":"failed"},"errors":{}}'
    assert readiness_detail(f"503 {body}") == "503: redis failed"
    assert readiness_detail('200 {"status":"ready","timestamp":1}') == "200"
    assert readiness_detail("SELECT 1 answered") == "SELECT 1 answered"
    assert readiness_detail("503 {not json") == "503"
