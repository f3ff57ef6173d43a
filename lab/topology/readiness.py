"""Readiness probes: when is a node ready to be broken?

Each probe answers once (``check``); ``wait_until_ready`` repeats it with tenacity until it
passes or a deadline expires. Probes reach nodes only through their 127.0.0.1 published
ports or through ``docker exec`` (the Docker API), never a container address.

Polling backs off from 10 ms to 100 ms: a node that gets ready quickly (Redis in ~0.1 s) is
seen within a few ms, and a slow one is asked no more often than the fixed 100 ms of before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpx
import psycopg
import redis
from tenacity import (
    RetryError,
    Retrying,
    retry_if_result,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential,
)

from lab.engine import ExecResult
from lab.expectations import UpstreamPolicy
from lab.topology.client import ClientTarget


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str
    hint: str | None = None     # what to do about a failure, when the probe can tell


class Probe(Protocol):
    """One readiness question about one node."""

    def check(self) -> ProbeResult: ...


@dataclass(frozen=True)
class SqlProbe:
    """A ``SELECT 1`` over a DSN (PostgreSQL directly, or through PgBouncer)."""

    dsn: str

    def check(self) -> ProbeResult:
        try:
            # prepare_threshold=None: PgBouncer 1.18 in transaction mode has no prepared statements.
            with psycopg.connect(self.dsn, connect_timeout=2, prepare_threshold=None,
                                 autocommit=True) as conn:
                conn.execute("SELECT 1")
            return ProbeResult(True, "SELECT 1 answered")
        except psycopg.Error as exc:
            return ProbeResult(False, str(exc).strip().splitlines()[0] if str(exc).strip()
                               else type(exc).__name__)


@dataclass(frozen=True)
class RedisProbe:
    url: str

    def check(self) -> ProbeResult:
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return ProbeResult(bool(client.ping()), "PING answered")
        except redis.RedisError as exc:
            return ProbeResult(False, f"{type(exc).__name__}: {exc}")
        finally:
            client.close()


@dataclass(frozen=True)
class ExecProbe:
    """A command inside the node (the backend's ``lab-probe /health/ready``)."""

    run: Callable[[list[str]], ExecResult]
    command: tuple[str, ...]

    def check(self) -> ProbeResult:
        result = self.run(list(self.command))
        return ProbeResult(result.exit_code == 0,
                           result.output.strip()[-200:] or f"exit {result.exit_code}")


_REDIRECT_HINT = ("the lab follows port 80's redirect to HTTPS when your file writes it as "
                  "`return 301 https://...` or `rewrite ^ https://... permanent` in the port-80 "
                  "server (or in its `location /`, or inside `if ($scheme = http)`); a redirect "
                  "written any other way reaches the lab's clients as this answer")


def served_by(pool: UpstreamPolicy | None,
              names: tuple[str, ...]) -> tuple[tuple[str, ...], int]:
    """The backends NGINX sends requests to while all are healthy, and the requests one
    round-robin turn over them takes: the pool's primary servers that are not ``down`` (a
    ``backup`` server answers only once every primary has failed, so a probe through NGINX
    never reaches it; each backend's own readiness is asked directly anyway). Every backend,
    one request each, when there is no user pool to read."""
    if pool is None or not pool.members:
        return names, 0
    primaries = [m for m in pool.members if not m.backup and not m.down and m.node in names]
    if not primaries:
        return names, 0
    served = tuple(sorted({m.node for m in primaries}, key=names.index))
    return served, sum(m.weight for m in primaries)


@dataclass(frozen=True)
class ThroughNginxProbe:
    """Every backend answers ``path`` with 200 through the load balancer (seen by X-Backend-Id).

    It asks where the lab's clients send (``target``: port 80, or HTTPS on 443 as the TLS
    server's name when port 80 only redirects)."""

    target: ClientTarget
    backends: tuple[str, ...]
    path: str = "/health/ready"
    # False: a user's backend that does not name itself (no X-Backend-Id); then 3 x backends
    # consecutive 200s stand for "every backend answered" (round robin reaches each).
    identified: bool = True
    # True: the pool balances by hash or ip_hash on what the probe cannot vary (its one client
    # address, its one URI), so NGINX sends every probe to the same backend and a 200 from
    # any backend through it is ready (each backend answered its own probe first).
    keyed: bool = False
    # The requests one round-robin turn takes (the primaries' weights summed; 0: one each):
    # a weight 10 server answers ten probes for each of a weight 1's.
    turn: int = 0

    @property
    def _tries(self) -> int:
        return 3 * max(len(self.backends), self.turn)

    def _asked(self, count: int) -> str:
        return f"GET {self.path} at {self.target.describe()}, {count} time{'s' * (count > 1)}"

    def _answer(self, response: httpx.Response, count: int) -> ProbeResult:
        """A failure sentence for an answer that is not 200: what was asked, what came back."""
        status = f"{response.status_code} {response.reason_phrase}".strip()
        location = response.headers.get("location")
        if location is not None and 300 <= response.status_code < 400:
            return ProbeResult(False, f"asked {self._asked(count)}: answered {status}, "
                               f"Location: {location}", _REDIRECT_HINT)
        return ProbeResult(False, f"asked {self._asked(count)}: answered {status}"
                           + (f" from {response.headers['x-backend-id']}"
                              if "x-backend-id" in response.headers else ""))

    def _error(self, exc: httpx.HTTPError, count: int) -> ProbeResult:
        return ProbeResult(False, f"asked {self._asked(count)}: {type(exc).__name__}: {exc}")

    def check(self) -> ProbeResult:
        if not self.identified:
            return self._unidentified()
        seen: set[str] = set()
        last: httpx.Response | None = None
        tries = self._tries
        # Round robin reaches every backend in one turn (len(backends) requests, or the sum of
        # their weights); allow a few more.
        with self.target.httpx_client(timeout=2.0) as client:
            for index in range(tries):
                try:
                    response = client.get(self.path)
                except httpx.HTTPError as exc:
                    return self._error(exc, index + 1)
                last = response
                if response.status_code == 200:
                    seen.add(response.headers.get("x-backend-id", ""))
                if seen >= set(self.backends) or (self.keyed and seen & set(self.backends)):
                    if self.keyed:
                        return ProbeResult(True, f"{', '.join(sorted(seen))} answered 200 at "
                                           f"{self.target.describe()} (hashed: every probe "
                                           "goes to one backend)")
                    return ProbeResult(True, f"all of {', '.join(self.backends)} answered 200 "
                                       f"at {self.target.describe()}")
        if last is not None and last.status_code != 200:
            return self._answer(last, tries)
        missing = sorted(set(self.backends) - seen)
        return ProbeResult(False, f"asked {self._asked(tries)}: no 200 from "
                           f"{', '.join(missing)} (answers named {', '.join(sorted(seen)) or '-'})")

    def _unidentified(self) -> ProbeResult:
        tries = self._tries
        with self.target.httpx_client(timeout=2.0) as client:
            for index in range(tries):
                try:
                    response = client.get(self.path)
                except httpx.HTTPError as exc:
                    return self._error(exc, index + 1)
                if response.status_code != 200:
                    return self._answer(response, index + 1)
        return ProbeResult(True, f"{tries} answers 200 in a row at {self.target.describe()}")


FIRST_INTERVAL_S = 0.01
MAX_INTERVAL_S = 0.1


def wait_until_ready(probe: Probe, timeout_s: float, *, first_interval_s: float = FIRST_INTERVAL_S,
                     max_interval_s: float = MAX_INTERVAL_S, abort: threading.Event | None = None,
                     on_probe: Callable[[], None] = lambda: None) -> ProbeResult:
    """Repeat a probe until it passes, ``timeout_s`` passed or ``abort`` is set; the last result.

    The pause between probes doubles from ``first_interval_s`` up to ``max_interval_s``;
    ``on_probe`` is called before each probe (the `lab up --timings` count)."""
    stop = stop_after_delay(timeout_s)
    if abort is not None:
        stop = stop | stop_when_event_set(abort)

    def check() -> ProbeResult:
        on_probe()
        return probe.check()

    retrying = Retrying(stop=stop, retry=retry_if_result(lambda result: not result.ok),
                        wait=wait_exponential(multiplier=first_interval_s, min=first_interval_s,
                                              max=max_interval_s),
                        sleep=abort.wait if abort is not None else time.sleep)
    try:
        return retrying(check)
    except RetryError as exc:
        return exc.last_attempt.result()
