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


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str


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


@dataclass(frozen=True)
class ThroughNginxProbe:
    """Every backend answers ``path`` with 200 through the load balancer (seen by X-Backend-Id)."""

    base_url: str
    backends: tuple[str, ...]
    path: str = "/health/ready"
    # False: a user's backend that does not name itself (no X-Backend-Id); then 3 x backends
    # consecutive 200s stand for "every backend answered" (round robin reaches each).
    identified: bool = True

    def check(self) -> ProbeResult:
        if not self.identified:
            return self._unidentified()
        seen: set[str] = set()
        last = "no answer"
        # Round robin reaches every backend in len(backends) requests; allow a few more.
        # Plain HTTP: nothing to verify, and the default SSL context costs ~40 ms per client.
        with httpx.Client(base_url=self.base_url, timeout=2.0, verify=False) as client:
            for _ in range(3 * len(self.backends)):
                try:
                    response = client.get(self.path)
                except httpx.HTTPError as exc:
                    return ProbeResult(False, f"{type(exc).__name__}: {exc}")
                last = f"{response.status_code} from {response.headers.get('x-backend-id', '?')}"
                if response.status_code == 200:
                    seen.add(response.headers.get("x-backend-id", ""))
                if seen >= set(self.backends):
                    return ProbeResult(True, f"all of {', '.join(self.backends)} answered 200")
        missing = sorted(set(self.backends) - seen)
        return ProbeResult(False, f"no 200 through nginx from {', '.join(missing)} (last: {last})")

    def _unidentified(self) -> ProbeResult:
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            for index in range(3 * len(self.backends)):
                try:
                    response = client.get(self.path)
                except httpx.HTTPError as exc:
                    return ProbeResult(False, f"{type(exc).__name__}: {exc}")
                if response.status_code != 200:
                    return ProbeResult(False, f"answer {index + 1}: {response.status_code}")
        return ProbeResult(True, f"{3 * len(self.backends)} answers 200 in a row")


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
