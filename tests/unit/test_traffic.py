"""The open-model probe client against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest
from aiohttp import web

from lab.history import Outcome
from lab.topology.tls import make_tls
from lab.workload.traffic import TrafficRun, TrafficSpec


class Server:
    """A small aiohttp app in its own thread: fast, slow, hanging and failing routes."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.seen_request_ids: list[str] = []
        self.port = 0
        self.max_concurrent = 0
        self._concurrent = 0
        self._loop = asyncio.new_event_loop()
        self._release: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _health(self, request: web.Request) -> web.Response:
        self.seen_request_ids.append(request.headers.get("X-Request-Id", ""))
        return web.Response(text="ok", headers={"X-Backend-Id": "backend-7"})

    async def _slow(self, request: web.Request) -> web.Response:
        self._concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self._concurrent)
        try:
            await asyncio.sleep(float(request.query.get("s", "0.5")))
        finally:
            self._concurrent -= 1
        return web.Response(text="slow", headers={"X-Backend-Id": "backend-1"})

    async def _hang(self, _request: web.Request) -> web.Response:
        assert self._release is not None
        await self._release.wait()
        return web.Response(text="late")

    async def _unavailable(self, _request: web.Request) -> web.Response:
        return web.Response(status=503, headers={"X-Backend-Id": "backend-2"})

    async def _start(self) -> None:
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/slow", self._slow)
        app.router.add_get("/hang", self._hang)
        app.router.add_get("/unavailable", self._unavailable)
        # The hanging route waits on _release, so shutdown never needs aiohttp's 60 s grace.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        assert self._release is not None
        self._release.set()
        await self._runner.cleanup()
        # Let closed transports run their connection_lost callbacks before the loop closes.
        await asyncio.sleep(0.1)

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"


@pytest.fixture
def server() -> Iterator[Server]:
    """A plain-HTTP test server for one test."""
    with Server() as running:
        yield running


def run(url: str, *specs: TrafficSpec, timeout: float = 30.0,
        ca_pem: bytes | None = None) -> TrafficRun:
    """Start a run and wait for it to end by itself."""
    traffic = TrafficRun(url, specs, seed=1, ca_pem=ca_pem)
    traffic.start()
    assert traffic.wait(timeout)
    return traffic


def test_counts_bounded_and_ids_unique(server: Server) -> None:
    """rate * duration requests, each with a unique id that reaches the server."""
    traffic = run(server.url, TrafficSpec(rate_per_s=50, duration_s=0.5))
    records = traffic.records
    assert len(records) == 25
    assert traffic.counts == (25, 25, 0, 0)
    assert [r.id for r in records] == list(range(25))
    assert len({r.request_id for r in records}) == 25
    assert sorted(server.seen_request_ids) == sorted(r.request_id for r in records)
    assert all(r.outcome is Outcome.OK and r.status == 200 and r.backend == "backend-7"
               for r in records)


def test_open_model_keeps_schedule_when_server_is_slow(server: Server) -> None:
    """Requests leave on schedule although each answer takes 0.5 s."""
    started = time.monotonic()
    traffic = run(server.url, TrafficSpec(rate_per_s=20, duration_s=1.0, path="/slow?s=0.5"))
    elapsed = time.monotonic() - started
    records = traffic.records
    assert len(records) == 20
    first = records[0].intended_at
    for i, record in enumerate(records):
        assert record.intended_at == pytest.approx(first + i / 20, abs=1e-6)
        assert record.sent_at - record.intended_at < 0.1
        assert record.latency_s is not None and record.latency_s >= 0.5
    # A closed-loop client would need 20 * 0.5 s; the open model needs about 1 + 0.5 s.
    assert elapsed < 3.0


def test_timeouts_become_unknown_and_run_ends_by_itself(server: Server) -> None:
    """Requests with no answer in time are unknown, and the run ends within duration + timeout."""
    started = time.monotonic()
    traffic = run(server.url, TrafficSpec(rate_per_s=10, duration_s=0.5, path="/hang",
                                          timeout_s=0.3))
    elapsed = time.monotonic() - started
    records = traffic.records
    assert len(records) == 5
    assert all(r.outcome is Outcome.UNKNOWN and r.latency_s is None for r in records)
    assert all("timeout" in (r.error or "") for r in records)
    assert elapsed < 0.5 + 0.3 + 1.0


def test_refused_becomes_fail() -> None:
    """A connection refused before anything was sent is a fail, not unknown."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    traffic = run(f"http://127.0.0.1:{port}", TrafficSpec(rate_per_s=20, duration_s=0.25))
    records = traffic.records
    assert len(records) == 5
    assert all(r.outcome is Outcome.FAIL and r.status is None for r in records)
    assert traffic.counts == (5, 0, 5, 0)


def test_error_status_is_fail(server: Server) -> None:
    """An answer with status >= 400 is a fail that keeps the status and backend."""
    (record,) = run(server.url, TrafficSpec(rate_per_s=1, duration_s=1,
                                            path="/unavailable")).records
    assert (record.outcome, record.status, record.backend) == (Outcome.FAIL, 503, "backend-2")


def test_stop_records_outstanding_as_unknown(server: Server) -> None:
    """stop() cancels in-flight requests, records them unknown, and sends nothing more."""
    traffic = TrafficRun(server.url, [TrafficSpec(rate_per_s=20, duration_s=5, path="/hang")])
    traffic.start()
    time.sleep(0.3)
    started = time.monotonic()
    traffic.stop()
    assert time.monotonic() - started < 2.0
    records = traffic.records
    assert 1 <= len(records) < 100
    assert all(r.outcome is Outcome.UNKNOWN for r in records)
    sent, ok, failed, unknown = traffic.counts
    assert (sent, ok, failed, unknown) == (len(records), 0, 0, len(records))


def test_several_specs_run_concurrently(server: Server) -> None:
    """Two specs run side by side with disjoint ids and their own client names."""
    traffic = run(server.url, TrafficSpec(rate_per_s=20, duration_s=0.5, client="a"),
                  TrafficSpec(rate_per_s=10, duration_s=0.5, client="b", path="/unavailable"))
    records = traffic.records
    assert [r.id for r in records] == list(range(15))
    assert sum(r.client == "a" for r in records) == 10
    assert {r.outcome for r in records if r.client == "b"} == {Outcome.FAIL}


def test_max_in_flight_caps_concurrency(server: Server) -> None:
    """At most max_in_flight requests are open at once; queued ones record when they left."""
    traffic = run(server.url, TrafficSpec(rate_per_s=50, duration_s=0.2, path="/slow?s=0.1",
                                          max_in_flight=2))
    records = traffic.records
    assert len(records) == 10 and all(r.outcome is Outcome.OK for r in records)
    assert server.max_concurrent <= 2
    # Ten requests of 0.1 s through two slots: the last leaves about 0.4 s after its due time.
    assert records[-1].sent_at - records[-1].intended_at > 0.2


def test_https_with_lab_ca() -> None:
    """HTTPS to 127.0.0.1 verifies against the lab's CA."""
    tls = make_tls("unit", "lab.local")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "c.pem"), Path(tmp, "k.pem")
        cert.write_bytes(tls.cert_pem)
        key.write_bytes(tls.key_pem)
        context.load_cert_chain(cert, key)
    with Server(context) as https:
        (record,) = run(https.url, TrafficSpec(rate_per_s=1, duration_s=1),
                        ca_pem=tls.ca_pem).records
        assert record.outcome is Outcome.OK
        (untrusted,) = run(https.url, TrafficSpec(rate_per_s=1, duration_s=1)).records
        assert untrusted.outcome is Outcome.FAIL


@pytest.mark.parametrize("url", [
    "http://localhost:8080", "http://10.0.0.5:80", "http://example.com:80", "http://127.0.0.1",
    "ftp://127.0.0.1:21", "http://127.0.0.1:80/prefix", "http://127.0.0.2:80",
])
def test_refuses_non_loopback_urls(url: str) -> None:
    """Anything but http(s)://127.0.0.1:PORT is refused."""
    with pytest.raises(ValueError):
        TrafficRun(url, [TrafficSpec(rate_per_s=1, duration_s=1)])


@pytest.mark.parametrize("kwargs", [
    {"rate_per_s": 0, "duration_s": 1}, {"rate_per_s": 1, "duration_s": -1},
    {"rate_per_s": 1, "duration_s": 1, "timeout_s": 0},
    {"rate_per_s": 1, "duration_s": 1, "max_in_flight": 0},
    {"rate_per_s": 1, "duration_s": 1, "path": "health"},
])
def test_invalid_specs(kwargs: dict[str, float | str]) -> None:
    """Nonsensical specs are refused with ValueError."""
    with pytest.raises(ValueError):
        TrafficSpec(**kwargs)  # type: ignore[arg-type]
