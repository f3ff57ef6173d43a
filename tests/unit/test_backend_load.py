"""The backend load client's program, run for real against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lab.errors import LabError
from lab.workload.backend_load import load_script, run_backend_load

TOKEN = "t0ken"


class _Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, as uvicorn answers

    def do_GET(self) -> None:
        ok = self.headers.get("Authorization") == f"Bearer {TOKEN}"
        body = b'{"conversations": []}' if ok else b'{"error": "unauthorized"}'
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api() -> Iterator[int]:
    """A real HTTP server on 127.0.0.1 in a thread; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def run_here(command: list[str], *, timeout_s: float) -> tuple[int, str]:
    """Lab.run_client's shape, but a local process (the program is plain Python)."""
    done = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    return done.returncode, done.stdout + done.stderr


def test_the_load_stops_at_max_requests_and_counts_statuses(api: int) -> None:
    """Eight clients stop after 200 requests in all, every answer counted by status."""
    result = run_backend_load(run_here, ["127.0.0.1"], api, TOKEN, clients=8, duration_s=5,
                              max_requests=200)
    assert result.statuses == (("200", 200),)
    assert (result.requests, result.errors, result.clients) == (200, 0, 8)
    assert 0 < result.duration_s < 5


def test_wrong_token_and_refused_connections_are_errors(api: int) -> None:
    """A 401 and a refused port are counted as errors, by status and by error type."""
    result = run_backend_load(run_here, ["127.0.0.1"], api, "wrong", clients=2, duration_s=0.3,
                              max_requests=10)
    assert result.statuses == (("401", 10),) and result.errors == 10
    refused = run_backend_load(run_here, ["127.0.0.1"], 1, TOKEN, clients=2, duration_s=0.3,
                               max_requests=10)
    assert refused.errors == refused.requests > 0
    assert refused.statuses[0][0] == "ConnectionRefusedError"


def test_bounds_are_enforced_and_a_failed_client_is_a_lab_error() -> None:
    """Too many clients or too long a load is refused; a client that prints nothing raises."""
    with pytest.raises(ValueError, match="clients"):
        load_script(["backend-1"], 8000, "/", TOKEN, clients=10_000, duration_s=1, max_requests=1)
    with pytest.raises(ValueError, match="duration_s"):
        load_script(["backend-1"], 8000, "/", TOKEN, clients=1, duration_s=600, max_requests=1)
    with pytest.raises(LabError, match="backend load client failed"):
        run_backend_load(lambda command, timeout_s: (1, "boom"), ["backend-1"], 8000, TOKEN)
