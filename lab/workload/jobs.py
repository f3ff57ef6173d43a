"""The scheduled jobs' own records, read straight from PostgreSQL after a run, and the lock
store's view of who holds each job's lock, sampled while the run lasts (``LockSampler``).

The backends write ``job_runs`` (one row per execution, ``finished_at`` NULL until it ends)
and ``fencing_rejections`` (one row per side effect refused for a stale token); see
``images/backend/lab_backend/db.py``. They are read through PostgreSQL's published
127.0.0.1 port, not PgBouncer, so a pooler fault cannot hide them. Timestamps become epoch
seconds with ``EXTRACT(EPOCH ...)``, the clock every other history record uses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Self

import psycopg
import redis

from lab.contract import REFERENCE_LOCK_PREFIX
from lab.errors import LabError
from lab.history import FencingRejection, JobRun, LockSample

CONNECT_TIMEOUT_S = 5

_JOB_RUNS = """
SELECT id, job, node, fencing_token, tick,
       EXTRACT(EPOCH FROM started_at)::float8,
       EXTRACT(EPOCH FROM finished_at)::float8,
       outcome
FROM job_runs
WHERE started_at >= to_timestamp(%s)
ORDER BY started_at, id
"""

_FENCING_REJECTIONS = """
SELECT job, node, token, last_token, EXTRACT(EPOCH FROM at)::float8
FROM fencing_rejections
WHERE at >= to_timestamp(%s)
ORDER BY at, id
"""


def _connect(dsn: str) -> psycopg.Connection:
    # client_encoding: text columns come back as str even from a SQL_ASCII database.
    return psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                           client_encoding="utf8")


def read_job_runs(dsn: str, since: float) -> list[JobRun]:
    """Every job run started at or after ``since`` (epoch seconds), oldest first."""
    with _connect(dsn) as conn:
        rows = conn.execute(_JOB_RUNS, (since,)).fetchall()
    return [JobRun(id=int(id_), job=job, node=node,
                   fencing_token=None if token is None else int(token), tick=int(tick),
                   started_at=float(started),
                   finished_at=None if finished is None else float(finished),
                   outcome=outcome)
            for id_, job, node, token, tick, started, finished, outcome in rows]


def read_fencing_rejections(dsn: str, since: float) -> list[FencingRejection]:
    """Every fencing rejection recorded at or after ``since`` (epoch seconds), oldest first."""
    with _connect(dsn) as conn:
        rows = conn.execute(_FENCING_REJECTIONS, (since,)).fetchall()
    return [FencingRejection(job=job, node=node, token=int(token), last_token=int(last),
                             at=float(at))
            for job, node, token, last, at in rows]



def read_locks(client: redis.Redis, jobs: tuple[str, ...]) -> dict[str, tuple[str, int | None]]:
    """Each held job's lock as Redis has it: holder node and fencing token."""
    held = {}
    keys = [REFERENCE_LOCK_PREFIX + job for job in jobs]
    for job, raw in zip(jobs, client.mget(keys), strict=True):
        if raw is None:
            continue
        node, _, rest = raw.decode().partition("|")
        fence = rest.rpartition("|")[2]
        held[job] = (node, int(fence) if fence.isdigit() else None)
    return held


def redis_client(url: str, timeout_s: float = 1.0) -> redis.Redis:
    """A client of the lab's Redis on its published 127.0.0.1 port, every call bounded."""
    if not url.startswith("redis://127.0.0.1:"):
        raise ValueError(f"the lab reads Redis only on 127.0.0.1, not {url}")
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


class LockSampler:
    """Reads every job's lock straight from Redis every ``interval_s``, in a thread.

    Straight from the lock store, not through ``/admin/locks`` behind NGINX: during a Redis
    outage that endpoint answers 503, which NGINX retries and counts against every backend
    (``proxy_next_upstream http_503``), so sampling it would eject the backends the scenario
    watches. Bounded in count and time: it stops at ``stop()``, after ``max_duration_s``, or
    after ``max_samples``. A read that fails (Redis down) is counted in ``errors``.

    ``redis_url`` may be a callable: after a failed read the sampler asks it again (at most
    once a second), because a restarted container gets a new ephemeral host port, and a URL
    taken before the restart would keep failing for the rest of the run.
    """

    def __init__(self, redis_url: str | Callable[[], str], jobs: tuple[str, ...], *,
                 interval_s: float = 0.1, timeout_s: float = 1.0, max_duration_s: float = 600.0,
                 max_samples: int = 20_000,
                 reader: Callable[[redis.Redis, tuple[str, ...]],
                                  dict[str, tuple[str, int | None]]] = read_locks):
        self._url = redis_url if callable(redis_url) else lambda: redis_url
        self._client: redis.Redis | None = None
        self._reconnect_at = 0.0
        self._jobs = jobs
        self.jobs = jobs
        # How a job's lock is read: the reference backend's keys, or a contract's pattern.
        self._reader = reader
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._max_duration_s = max_duration_s
        self._max_samples = max_samples
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lock-sampler", daemon=True)
        self.samples: list[LockSample] = []
        self.errors = 0

    def start(self) -> None:
        """Start sampling in the background."""
        self._thread.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop sampling and wait for the thread (at most one read timeout)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self._timeout_s * 2 + 1)
        self._drop_client()

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _read(self) -> dict[str, tuple[str, int | None]]:
        if self._client is None:
            if time.monotonic() < self._reconnect_at:
                raise redis.ConnectionError("waiting to look up Redis's port again")
            self._reconnect_at = time.monotonic() + 1.0
            self._client = redis_client(self._url(), self._timeout_s)
        try:
            return self._reader(self._client, self._jobs)
        except redis.RedisError:
            self._drop_client()
            raise

    def _loop(self) -> None:
        deadline = time.monotonic() + self._max_duration_s
        taken = 0
        while not self._stop.is_set() and time.monotonic() < deadline and taken < self._max_samples:
            taken += 1
            sent = time.time()
            try:
                held = self._read()
            except (redis.RedisError, LabError):
                self.errors += 1
            else:
                received = time.time()
                for job in self._jobs:
                    holder, token = held.get(job, (None, None))
                    self.samples.append(LockSample(sent, received, job, holder, token))
            self._stop.wait(max(0.0, self._interval_s - (time.time() - sent)))
