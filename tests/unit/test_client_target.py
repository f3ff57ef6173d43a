"""Where the lab's clients send when port 80 only redirects: HTTPS on 127.0.0.1 asking for the
TLS server's name (SNI and Host) and trusting the lab's CA, against a real TLS server; the
readiness probe's one-sentence failure; a node's log lines as a reader needs them."""

from __future__ import annotations

import asyncio
import ssl
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import httpx
import pytest
from aiohttp import web

from lab.history import Outcome
from lab.topology.client import ClientTarget
from lab.topology.lab import log_excerpt
from lab.topology.readiness import ThroughNginxProbe
from lab.topology.render import ACCESS_LOG_FIELDS, ACCESS_LOG_TAG
from lab.topology.tls import TlsMaterial, make_tls
from lab.workload.traffic import TrafficRun, TrafficSpec

NAME = "api.example.com"


class Site:
    """An aiohttp app on 127.0.0.1 in its own thread that records the SNI and Host it got;
    /health/ready answers 200 with X-Backend-Id, /moved a redirect."""

    def __init__(self, tls: TlsMaterial | None) -> None:
        self.context: ssl.SSLContext | None = None
        if tls is not None:
            self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            with tempfile.TemporaryDirectory() as tmp:
                cert, key = Path(tmp, "c.pem"), Path(tmp, "k.pem")
                cert.write_bytes(tls.cert_pem)
                key.write_bytes(tls.key_pem)
                self.context.load_cert_chain(cert, key)
            self.context.sni_callback = self._sni
        self.sni: list[str | None] = []
        self.hosts: list[str] = []
        self.port = 0
        self._turn = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _sni(self, _socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        self.sni.append(name)

    async def _ready(self, request: web.Request) -> web.Response:
        self.hosts.append(request.headers.get("Host", ""))
        self._turn += 1
        return web.Response(text="ok", headers={"X-Backend-Id": f"backend-{self._turn % 3 + 1}"})

    async def _moved(self, request: web.Request) -> web.Response:
        return web.Response(status=301, headers={"Location": f"https://{NAME}{request.path}"})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/health/ready", self._ready)
        app.router.add_get("/moved", self._moved)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.context).start()
        self.port = self._runner.addresses[0][1]

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture(scope="module")
def tls() -> TlsMaterial:
    """The lab's CA and a certificate for the file's TLS name."""
    return make_tls("unit", NAME, names=("www.example.com",))


@pytest.fixture
def https(tls: TlsMaterial) -> Iterator[Site]:
    """A TLS site serving the lab's certificate."""
    with Site(tls) as site:
        yield site


def test_httpx_client_asks_for_the_name(https: Site, tls: TlsMaterial) -> None:
    """SNI and Host are the TLS server's name, verified with the lab's CA; the URL stays
    127.0.0.1."""
    target = ClientTarget(f"https://127.0.0.1:{https.port}", NAME, tls.ca_pem)
    with target.httpx_client(timeout=5) as client:
        assert client.get("/health/ready").status_code == 200
    assert https.sni == [NAME] and https.hosts == [NAME]
    untrusted = ClientTarget(f"https://127.0.0.1:{https.port}", NAME)
    with untrusted.httpx_client(timeout=5) as client, pytest.raises(httpx.ConnectError):
        client.get("/health/ready")


def test_traffic_run_asks_for_the_name(https: Site, tls: TlsMaterial) -> None:
    """The open-model client sends SNI and Host too, and every request is ok."""
    target = ClientTarget(f"https://127.0.0.1:{https.port}", NAME, tls.ca_pem)
    traffic = TrafficRun(target, [TrafficSpec(rate_per_s=20, duration_s=0.2,
                                              path="/health/ready")], seed=1)
    traffic.start()
    assert traffic.wait(30)
    assert [r.outcome for r in traffic.records] == [Outcome.OK] * 4
    assert set(https.sni) == {NAME} and set(https.hosts) == {NAME}


def test_a_wrong_name_is_refused(https: Site, tls: TlsMaterial) -> None:
    """A name the certificate does not cover fails verification: SNI is really checked."""
    target = ClientTarget(f"https://127.0.0.1:{https.port}", "shop.example.com", tls.ca_pem)
    with target.httpx_client(timeout=5) as client, pytest.raises(httpx.ConnectError):
        client.get("/health/ready")


def test_only_loopback() -> None:
    """A target is a published 127.0.0.1 port, whatever name it asks for."""
    with pytest.raises(ValueError):
        ClientTarget("https://10.0.0.1:443", NAME)


def test_readiness_through_the_target(https: Site, tls: TlsMaterial) -> None:
    """The probe through NGINX asks where the clients send and sees every backend."""
    target = ClientTarget(f"https://127.0.0.1:{https.port}", NAME, tls.ca_pem,
                          "https://$host$request_uri")
    result = ThroughNginxProbe(target, ("backend-1", "backend-2", "backend-3")).check()
    assert result.ok, result.detail
    assert f"as {NAME} (port 80 redirects to https://$host$request_uri)" in result.detail


def test_readiness_failure_is_one_sentence_with_a_hint() -> None:
    """An answer that is a redirect: what was asked, what came back, where it points, and the
    hint on how the lab reads port 80's redirect."""
    with Site(None) as plain:
        target = ClientTarget(f"http://127.0.0.1:{plain.port}")
        result = ThroughNginxProbe(target, ("backend-1", "backend-2"), path="/moved").check()
    assert not result.ok
    assert result.detail == (f"asked GET /moved at http://127.0.0.1:{plain.port}, 6 times: "
                             f"answered 301 Moved Permanently, Location: https://{NAME}/moved")
    assert result.hint is not None and "return 301 https://" in result.hint


def _lablog(uri: str, status: int, at: float) -> str:
    values = {"$msec": f"{at:.3f}", "$request_time": "0.000", "$request_method": "GET",
              "$request_uri": uri, "$status": str(status), "$remote_addr": "172.18.0.1",
              "$pid": "29"}
    return "\t".join((ACCESS_LOG_TAG, *(values.get(f, "-") for f in ACCESS_LOG_FIELDS)))


def test_log_excerpt_summarises_repeats() -> None:
    """Twenty probe lines are one access-log summary; an error repeated with other times and
    connection numbers is one line with its count; at most a few lines."""
    lines = [_lablog("/health/ready", 301, 1700000000 + i) for i in range(20)]
    lines += [f"2024/01/01 12:00:0{i} [error] 29#29: *{i} connect() failed (111: Connection "
              f"refused) while connecting to upstream, client: 172.18.0.1:5{i}123"
              for i in range(5)]
    lines += [f"note {i}" for i in range(10)]
    text = log_excerpt("\n".join(lines))
    assert "access log: GET /health/ready -> 301 (x20)" in text
    assert text.count("connect() failed") == 0          # older than the last six distinct
    shown = text.splitlines()
    assert len(shown) == 7 and shown[-2] == "  note 9"
    errors = log_excerpt("\n".join(lines[20:25]))
    assert errors.count("connect() failed") == 1 and "(x5)" in errors
