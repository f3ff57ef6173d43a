"""Pool load through the backends: many HTTP clients on the lab network asking each backend's
database-backed API directly, so PgBouncer's clients are the backends' own pools.

Through NGINX this cannot be done from one address: the api zone (100 r/s, burst 0) rejects
any request that arrives in the same millisecond as the one before from that address. So the
clients run in one short-lived container on the lab's network (``Lab.run_client``) and talk
to ``backend-N:8000`` there; the host sends nothing but the command.

The script uses Python's standard library only (the sidecar image has python3 and nothing
else): one thread per client, each with a keep-alive connection to one backend (round robin
over the backends by client index), sending ``GET path`` with a bearer token until the
deadline or until ``max_requests`` were sent in all. Every request is bounded by a socket
timeout, every thread by a join timeout. The result is one JSON line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lab.errors import LabError

__all__ = ["BackendLoadResult", "load_script", "run_backend_load"]

MAX_CLIENTS = 500               # threads in one container process
REQUEST_TIMEOUT_S = 5.0

_SCRIPT = """\
import http.client, json, threading, time
backends, port, path, token = {backends!r}, {port!r}, {path!r}, {token!r}
clients, duration_s, max_requests, timeout_s = ({clients!r}, {duration_s!r}, {max_requests!r},
                                                {timeout_s!r})
lock = threading.Lock()
counts, sent = {{}}, [0]
start = time.time()
deadline = start + duration_s

def client(index):
    host, conn = backends[index % len(backends)], None
    while time.time() < deadline:
        with lock:
            if sent[0] >= max_requests:
                break
            sent[0] += 1
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
            conn.request("GET", path, headers={{"Authorization": "Bearer " + token}})
            response = conn.getresponse()
            response.read()
            outcome = str(response.status)
            if response.will_close:
                conn.close()
                conn = None
        except Exception as exc:
            outcome = type(exc).__name__
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.01)  # a refused connection must not spin
        with lock:
            counts[outcome] = counts.get(outcome, 0) + 1
    if conn is not None:
        conn.close()

threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(max(0.0, deadline + 2 * timeout_s - time.time()))
print(json.dumps({{"started_at": start, "ended_at": time.time(), "statuses": counts}}))
"""


@dataclass(frozen=True)
class BackendLoadResult:
    """What the HTTP clients saw: answers by status (or error type), and when the load ran."""

    clients: int
    started_at: float           # the container's clock, which is the host's
    ended_at: float
    statuses: tuple[tuple[str, int], ...]   # ("200", 11950), ("503", 3), ("TimeoutError", 1)

    @property
    def requests(self) -> int:
        return sum(count for _, count in self.statuses)

    @property
    def errors(self) -> int:
        """Answers other than 200, and requests that got no answer."""
        return sum(count for status, count in self.statuses if status != "200")

    @property
    def duration_s(self) -> float:
        return self.ended_at - self.started_at

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


def load_script(backends: Sequence[str], port: int, path: str, token: str, *, clients: int,
                duration_s: float, max_requests: int,
                timeout_s: float = REQUEST_TIMEOUT_S) -> str:
    """The client container's program (standard library only)."""
    if not 1 <= clients <= MAX_CLIENTS:
        raise ValueError(f"clients must be in 1..{MAX_CLIENTS}, got {clients}")
    if not 0 < duration_s <= 60:
        raise ValueError(f"duration_s must be in (0, 60], got {duration_s}")
    if not backends:
        raise ValueError("no backend to load")
    return _SCRIPT.format(backends=list(backends), port=port, path=path, token=token,
                          clients=clients, duration_s=duration_s, max_requests=max_requests,
                          timeout_s=timeout_s)


def run_backend_load(run_client: Callable[..., tuple[int, str]], backends: Sequence[str], port: int,
                     token: str, *, path: str = "/api/conversations", clients: int = 90,
                     duration_s: float = 6.0, max_requests: int = 60_000) -> BackendLoadResult:
    """Run ``clients`` HTTP clients against the backends from a container on the lab network.

    ``run_client`` is ``Lab.run_client``: it runs a command in a fresh container on the lab's
    network and removes it. Bounded by ``duration_s``, ``max_requests`` and the container's
    own timeout.
    """
    script = load_script(backends, port, path, token, clients=clients, duration_s=duration_s,
                         max_requests=max_requests)
    code, output = run_client(["python3", "-c", script],
                              timeout_s=duration_s + 2 * REQUEST_TIMEOUT_S + 30)
    lines = output.strip().splitlines()
    if code != 0 or not lines:
        raise LabError(f"the backend load client failed ({code}): {output.strip()[-300:]}")
    document = json.loads(lines[-1])
    statuses = tuple(sorted((str(k), int(v)) for k, v in document["statuses"].items()))
    return BackendLoadResult(clients, float(document["started_at"]), float(document["ended_at"]),
                             statuses)
