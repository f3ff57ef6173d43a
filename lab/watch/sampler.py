"""The sampler of ``lab watch``: a bounded probe stream through NGINX and what the
nodes themselves say, sampled in the background and summarised into typed snapshots.

Sources, every one on a published 127.0.0.1 port or through the Docker API:

- the probe stream: ``GET /health`` through NGINX, open model (``TrafficRun``), at ``rate`` for
  at most ``duration``; each answer's ``X-Backend-Id``, status and latency;
- Docker: every container of the lab (node states, the fault record, sidecars);
- readiness: each node's own readiness probe (``Lab.probe``) every few seconds; NGINX's is
  stub_status answering (its own probe would send requests through the balancer and show up in
  the shares);
- NGINX's access log (``docker logs``, ``lab.topology.access_log``): every try of every request,
  whoever sent it: which upstream, which status;
- NGINX's stub_status (the checklist's ``/nginx_status`` on 8080);
- Redis: the job locks' holders (``job_sources.lock_reader``: the backend's own keys);
- PgBouncer: ``SHOW POOLS``.

The sampler is one thread with an asyncio loop; blocking calls run in worker threads, each
bounded by its own timeout, and PgBouncer is read with psycopg's async API under ``wait_for``
(a frozen PgBouncer still ACKs TCP, so a blocking read would never return). Everything stops by
itself at the deadline. ``LiveView.snapshot`` summarises the buffers with the pure
functions of ``lab.watch.model``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg

from lab.engine import LABEL_KIND, LABEL_LAB, ContainerInfo
from lab.history import AccessLogEntry, Outcome, RequestRecord
from lab.topology.access_log import parse_access_log
from lab.topology.lab import Lab
from lab.topology.plan import container_name
from lab.topology.render import BACKEND_PORT, STATUS_PATH, STATUS_PORT
from lab.watch.model import (
    SERIES_BUCKETS,
    FaultView,
    LockView,
    Snapshot,
    fault_views,
    nginx_view,
    node_views,
    parse_stub_status,
    pool_view,
    probe_view,
    readiness_detail,
)
from lab.workload.job_sources import lock_reader
from lab.workload.jobs import redis_client
from lab.workload.pool_load import pool_samples_from_rows
from lab.workload.traffic import TrafficRun, TrafficSpec

READ_TIMEOUT_S = 2.0         # each source's read, at most
LOG_TAIL = 3000              # access log lines read per poll, at most (~30 s at 100 req/s)


# -- sampling -------------------------------------------------------------------------------------


# A failed read of these leaves no reading: an old lock holder or pool shown as current would
# mislead. Docker's states and the readiness answers stay until the next reading.
_DROPPED_ON_FAILURE = frozenset({"stub_status", "locks", "pool"})


class _Latest:
    """The last reading of each source, or why there is none, shared between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {}
        self._errors: dict[str, str] = {}

    def put(self, source: str, value: Any) -> None:
        with self._lock:
            self._values[source] = value
            self._errors.pop(source, None)

    def fail(self, source: str, why: str) -> None:
        with self._lock:
            self._errors[source] = why
            if source in _DROPPED_ON_FAILURE:
                self._values.pop(source, None)

    def get(self, source: str, default: Any = None) -> Any:
        with self._lock:
            return self._values.get(source, default)

    def errors(self) -> tuple[tuple[str, str], ...]:
        with self._lock:
            return tuple(sorted(self._errors.items()))


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:160] if text else type(exc).__name__


class LiveView:
    """Samples one running lab for the watch; ``snapshot()`` summarises what it has.

    Bounded: the probe stream sends ``rate * duration`` requests at most, the sampler stops at
    the same deadline, and ``stop()`` ends both at once. It creates no container."""

    def __init__(self, lab: Lab, *, rate_per_s: float = 20.0, duration_s: float = 600.0,
                 window_s: float = 10.0, path: str = "/health", interval_s: float = 0.5,
                 ready_interval_s: float = 3.0, log_lag_s: float = 6.0):
        self.lab = lab
        self.rate_per_s = rate_per_s
        self.duration_s = duration_s
        self.window_s = window_s
        self.path = path
        self.interval_s = interval_s
        self.ready_interval_s = ready_interval_s
        self.backends = tuple(n for n, role in lab.roles.items() if role == "backend")
        self._keep_s = max(window_s, SERIES_BUCKETS) + 1
        self._latest = _Latest()
        self._lock = threading.Lock()
        self._records: deque[RequestRecord] = deque()
        self._seen = 0
        self._entries: dict[tuple[Any, ...], AccessLogEntry] = {}
        self._addresses: dict[str, str] = {}
        self._ejections: dict[tuple[str, float], float | None] = {}
        # A server still in rotation is tried every servers / rate seconds by this stream
        # alone; five of those without a try (at least 1 s) means NGINX took it out.
        self._gap_s = max(1.0, 5 * len(self.backends) / rate_per_s)
        # How long after a try began NGINX may log it: its longest timeout (and a poll).
        self._lag_s = log_lag_s + interval_s
        # One client for the whole watch: a new one per reading (an SSL context each) cost
        # about 5% of a core at two readings a second.
        self._http = httpx.Client(timeout=READ_TIMEOUT_S)
        self._traffic: TrafficRun | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self.started_at = time.time()
        self.ends_at = self.started_at + duration_s

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LiveView:
        """Start the probe stream and the sampler; returns at once."""
        self.started_at = time.time()
        self.ends_at = self.started_at + self.duration_s
        self._traffic = TrafficRun(self.lab.client_target(self.path), [TrafficSpec(
            rate_per_s=self.rate_per_s, duration_s=self.duration_s, path=self.path,
            timeout_s=10.0, max_in_flight=200, client="watch")])
        self._traffic.start()
        self._thread = threading.Thread(target=self._run, name="lab-watch-sampler", daemon=True)
        self._thread.start()
        self._started.wait(5)
        return self

    @property
    def ended(self) -> bool:
        """The deadline passed: the stream and the sampling have stopped by themselves."""
        return time.time() >= self.ends_at

    def stop(self) -> None:
        """Stop the probe stream (outstanding requests cancelled) and the sampler."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):   # the loop already ended
                loop.call_soon_threadsafe(stopping.set)
        if self._traffic is not None:
            self._traffic.stop()
        if self._thread is not None:
            self._thread.join(2 * READ_TIMEOUT_S + 3)

    # -- the sampler thread ------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        # Workers for the blocking reads (Docker API, readiness, Redis, logs): each is bounded
        # by its own timeout, so a stop waits for the slowest at most.
        executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="lab-watch")
        self._loop.set_default_executor(executor)
        self._started.set()
        with contextlib.suppress(Exception):   # the pollers report it if it keeps failing
            await asyncio.wait_for(self._read_docker(), READ_TIMEOUT_S + 1)
        pollers = [
            self._every(self.interval_s, "docker", self._read_docker),
            self._every(self.interval_s, "access log", self._read_access_log),
            self._every(self.interval_s, "stub_status", self._read_stub_status),
            self._every(self.interval_s, "locks", self._read_locks),
            self._every(1.0, "pool", self._read_pool),
            self._every(self.ready_interval_s, "readiness", self._read_readiness),
            self._every(self.interval_s, "probe", self._collect_records),
        ]
        tasks = [asyncio.create_task(p) for p in pollers]
        try:
            deadline = self.ends_at - time.time() + 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(0.0, deadline))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._close_pool()
            executor.shutdown(wait=False, cancel_futures=True)
            self._http.close()

    async def _every(self, interval_s: float, source: str,
                     read: Callable[[], Awaitable[None]]) -> None:
        while True:
            started = time.monotonic()
            try:
                await asyncio.wait_for(read(), READ_TIMEOUT_S + 1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - shown as the source's error; sampling goes on
                self._latest.fail(source, _why(exc))
            await asyncio.sleep(max(0.05, interval_s - (time.monotonic() - started)))

    async def _blocking(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn)

    async def _read_docker(self) -> None:
        # One listing call, no inspect per container: it runs twice a second.
        infos = await self._blocking(
            lambda: self.lab.engine.container_states({LABEL_LAB: self.lab.name}))
        by_name = {info.name: info for info in infos}
        for info in infos:
            if info.labels.get(LABEL_KIND) == "node" and info.ip_address:
                self._addresses[f"{info.ip_address}:{BACKEND_PORT}"] = info.node
        self._latest.put("docker", by_name)

    async def _read_readiness(self) -> None:
        containers: Mapping[str, ContainerInfo] = self._latest.get("docker", {})

        def ask(node: str) -> tuple[str, tuple[bool, str]]:
            result = self.lab.probe(node).check()
            return node, (result.ok, readiness_detail(result.detail))

        nodes = [n for n, role in self.lab.roles.items() if role != "nginx"
                 and getattr(containers.get(container_name(self.lab.name, n)), "status", "")
                 == "running"]
        answers = await asyncio.gather(*(self._blocking(lambda n=n: ask(n)) for n in nodes),
                                       return_exceptions=True)
        ready = dict(self._latest.get("readiness", {}))
        for node, answer in zip(nodes, answers, strict=True):
            ready[node] = (False, _why(answer)) if isinstance(answer, BaseException) else answer[1]
        # NGINX's own probe would send requests through it; what it answers already says it.
        stub = self._latest.get("stub_status")
        with self._lock:
            answered = any(r.outcome is Outcome.OK and time.time() - r.sent_at < 3
                           for r in list(self._records)[-50:])
        nginx = ((True, "stub_status answered") if stub is not None
                 and time.time() - stub.at < 3 * self.interval_s + 1
                 else (True, "answering the probe stream") if answered
                 else (False, "no answer to the probe stream or stub_status"))
        ready.update({n: nginx for n, role in self.lab.roles.items() if role == "nginx"})
        self._latest.put("readiness", ready)

    async def _read_access_log(self) -> None:
        with self._lock:
            newest = max((e.msec for e in self._entries.values()), default=self.started_at - 1)
        name = container_name(self.lab.name, "nginx")
        text = await self._blocking(
            lambda: self.lab.engine.logs(name, tail=LOG_TAIL, since=newest - 2))
        entries = parse_access_log(text, self._addresses)
        cutoff = time.time() - self._keep_s
        with self._lock:
            for e in entries:
                if e.msec >= cutoff:
                    key = (e.msec, e.request_id, e.uri, e.remote_addr, e.upstream_addrs)
                    self._entries.setdefault(key, e)
            for key in [k for k, e in self._entries.items() if e.msec < cutoff]:
                del self._entries[key]
        self._latest.put("access log", len(entries))

    async def _read_stub_status(self) -> None:
        url = f"http://127.0.0.1:{self._published('nginx', f'{STATUS_PORT}/tcp')}{STATUS_PATH}"

        def get() -> str:
            response = self._http.get(url)
            response.raise_for_status()
            return response.text

        text = await self._blocking(get)
        self._latest.put("stub_status", parse_stub_status(text, time.time(),
                                                          self._latest.get("stub_status")))

    def _published(self, node: str, port: str) -> int:
        containers: Mapping[str, ContainerInfo] = self._latest.get("docker", {})
        info = containers.get(container_name(self.lab.name, node))
        if info is None or port not in info.published:
            raise LookupError(f"{node} publishes no {port} now")
        return info.published[port][1]

    async def _read_locks(self) -> None:
        url = f"redis://127.0.0.1:{self._published('redis', '6379/tcp')}/0"

        reader, jobs = lock_reader(self.lab.config.backend.contract), self.lab.config.backend.jobs
        if reader is None:
            raise LookupError("the backend contract names no lock keys")

        def read() -> dict[str, tuple[str, int | None]]:
            with redis_client(url, timeout_s=1.0) as client:
                return reader(client, jobs)

        held = await self._blocking(read)
        self._latest.put("locks", tuple(LockView(job=job, holder=held.get(job, (None, None))[0],
                                                 token=held.get(job, (None, None))[1])
                                        for job in jobs))

    _pool_conn: psycopg.AsyncConnection[Any] | None = None

    async def _read_pool(self) -> None:
        if self._pool_conn is None:
            dsn = await self._blocking(lambda: self.lab.endpoints.pgbouncer_admin_dsn)
            self._pool_conn = await asyncio.wait_for(psycopg.AsyncConnection.connect(
                dsn, autocommit=True, cursor_factory=psycopg.AsyncClientCursor,
                connect_timeout=2), READ_TIMEOUT_S + 1)
        try:
            cursor = await asyncio.wait_for(self._pool_conn.execute("SHOW POOLS"), READ_TIMEOUT_S)
            names = [c.name for c in cursor.description or ()]
            rows = [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]
        except BaseException:
            await self._close_pool()
            raise
        samples = pool_samples_from_rows(rows, time.time(), self.lab.config.postgres.database)
        if samples:
            self._latest.put("pool", pool_view(samples[0]))

    async def _close_pool(self) -> None:
        conn, self._pool_conn = self._pool_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 1.0)

    async def _collect_records(self) -> None:
        if self._traffic is None:
            return
        fresh = self._traffic.records_since(self._seen)
        cutoff = time.time() - self._keep_s
        with self._lock:
            self._seen += len(fresh)
            self._records.extend(fresh)
            while self._records and self._records[0].sent_at < cutoff:
                self._records.popleft()

    # -- the snapshot -----------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """What the lab looks like now, from the latest readings (cheap: no I/O)."""
        now = time.time()
        containers: Mapping[str, ContainerInfo] = self._latest.get("docker", {})
        with self._lock:
            records = list(self._records)
            entries = sorted(self._entries.values(), key=lambda e: e.msec)
            total = self._seen
        faults: tuple[FaultView, ...] = ()
        errors = list(self._latest.errors())
        try:
            faults = fault_views(containers, self.lab.name)
        except Exception as exc:  # noqa: BLE001 - an unreadable record is shown, not fatal
            errors.append(("fault record", _why(exc)))
        nginx = nginx_view(entries, now, self.window_s, self.backends, faults, gap_s=self._gap_s,
                           lag_s=self._lag_s, settled=self._ejections)
        for upstream in nginx.upstreams:
            if upstream.ejection_settled and upstream.fault_since is not None:
                self._ejections[(upstream.name, upstream.fault_since)] = upstream.ejected_after_s
        return Snapshot(
            at=now, lab=self.lab.name, ends_at=self.ends_at,
            nodes=node_views(self.lab.roles, containers, self.lab.name,
                             self._latest.get("readiness", {})),
            faults=faults,
            probe=probe_view(records, now, self.window_s, self.backends,
                             rate_per_s=self.rate_per_s, path=self.path, total=total),
            nginx=nginx,
            stub_status=self._latest.get("stub_status"), locks=self._latest.get("locks"),
            pool=self._latest.get("pool"), errors=tuple(errors))
