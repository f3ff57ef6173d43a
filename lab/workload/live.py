"""The live view of one lab (``lab watch``): a bounded probe stream through NGINX and what the
nodes themselves say, sampled in the background and summarised into typed snapshots.

Sources, every one on a published 127.0.0.1 port or through the Docker API:

- the probe stream: ``GET /health`` through NGINX, open model (``TrafficRun``), at ``rate`` for
  at most ``duration``; each answer's ``X-Backend-Id``, status and latency;
- Docker: every container of the lab (node states, the fault record, sidecars);
- readiness: each node's own readiness probe (``Lab.probe``) every few seconds; NGINX's is
  stub_status answering (its own probe would send requests through the balancer and show up in
  the shares);
- NGINX's access log (``docker logs``, ``lab.workload.access_log``): every try of every request,
  whoever sent it: which upstream, which status;
- NGINX's stub_status (the checklist's ``/nginx_status`` on 8080);
- Redis: the job locks' holders (``job_sources.lock_reader``: the backend's own keys);
- PgBouncer: ``SHOW POOLS``.

The sampler is one thread with an asyncio loop; blocking calls run in worker threads, each
bounded by its own timeout, and PgBouncer is read with psycopg's async API under ``wait_for``
(a frozen PgBouncer still ACKs TCP, so a blocking read would never return). Everything stops by
itself at the deadline. ``summarise`` is pure: buffers in, ``Snapshot`` out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
from pydantic import BaseModel, ConfigDict

from lab.engine import LABEL_KIND, LABEL_LAB, ContainerInfo
from lab.faults import record as fault_record
from lab.history import AccessLogEntry, Outcome, PoolSample, RequestRecord
from lab.stats import nearest_rank
from lab.topology.lab import Lab
from lab.topology.plan import container_name
from lab.topology.render import BACKEND_PORT, STATUS_PATH, STATUS_PORT
from lab.workload.access_log import parse_access_log, upstream_attempts
from lab.workload.job_sources import lock_reader
from lab.workload.jobs import redis_client
from lab.workload.pool_load import pool_samples_from_rows
from lab.workload.traffic import TrafficRun, TrafficSpec

SCHEMA = 1
SERIES_BUCKETS = 30          # one sparkline bucket per second
READ_TIMEOUT_S = 2.0         # each source's read, at most
LOG_TAIL = 3000              # access log lines read per poll, at most (~30 s at 100 req/s)
_SPARKS = "▁▂▃▄▅▆▇█"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NodeView(_Model):
    """One node: Docker's state, and its readiness probe's last answer (None: not asked yet)."""

    name: str
    role: str
    state: str
    ready: bool | None
    detail: str = ""


class FaultView(_Model):
    """One recorded fault (``lab.faults.record``) and whether it is still in place."""

    target: str
    kind: str
    params: str
    since: float
    by: str
    state: str
    until: float | None = None


class BackendView(_Model):
    """One backend as the probe stream's clients see it."""

    name: str
    answered: int                    # ok answers it gave in the window
    share: float                     # of every ok answer in the window
    per_s: float                     # ok answers in the last whole second
    series: tuple[int, ...]          # ok answers per second, oldest first (the sparkline)
    last_ok_at: float | None


class ProbeView(_Model):
    """The probe stream over the sliding window: shares, statuses and latency."""

    rate_per_s: float
    path: str
    window_s: float
    sent: int                        # finished requests sent in the window
    ok: int
    failed: int
    unknown: int
    statuses: tuple[tuple[str, int], ...]   # "200", "502", "no answer", ... -> count
    p50_ms: float | None
    p99_ms: float | None
    backends: tuple[BackendView, ...]
    total: int                       # requests finished since the stream started


class UpstreamView(_Model):
    """One upstream server as NGINX's access log shows it over the window, and, while a fault
    is in place on it, when NGINX stopped trying it (the last try of the first run of tries
    after the fault; later single tries are NGINX probing it again every fail_timeout)."""

    name: str
    tries: int
    failed: int                      # tries answered 5xx or not at all
    last_try_at: float | None
    fault_since: float | None = None       # the fault in place on it: when it was injected
    ejected_after_s: float | None = None   # its last try of that run, after the fault
    ejection_settled: bool = False         # a quiet gap followed: NGINX took it out


class NginxView(_Model):
    """NGINX's own view: every try of every request it logged in the window."""

    window_s: float
    requests: int
    requests_per_s: float            # over the window, or the part of it the log covers
    retried: int                     # requests NGINX tried on more than one server
    no_live_upstream: int            # answered 502 with no server left to try
    statuses: tuple[tuple[str, int], ...]
    upstreams: tuple[UpstreamView, ...]


class StubStatus(_Model):
    """NGINX's stub_status page, and the request rate since the previous reading."""

    at: float
    active: int
    accepts: int
    handled: int
    requests: int
    reading: int
    writing: int
    waiting: int
    requests_per_s: float | None = None


class LockView(_Model):
    job: str
    holder: str | None
    token: int | None


class PoolView(_Model):
    """PgBouncer's SHOW POOLS for the app database."""

    at: float
    cl_active: int
    cl_waiting: int
    sv_active: int
    sv_idle: int
    servers: int                     # every server connection, in use or idle
    maxwait_s: float


class Snapshot(_Model):
    """Everything the watch shows at one instant (``lab watch --json`` prints these)."""

    schema_version: int = SCHEMA
    at: float
    lab: str
    ends_at: float                   # the probe stream and the sampling stop by themselves
    nodes: tuple[NodeView, ...]
    faults: tuple[FaultView, ...]
    probe: ProbeView
    nginx: NginxView
    stub_status: StubStatus | None
    locks: tuple[LockView, ...] | None
    pool: PoolView | None
    errors: tuple[tuple[str, str], ...] = ()   # source -> why it has no fresh reading


# -- pure parts ---------------------------------------------------------------------------------


def sparkline(values: Sequence[float], top: float | None = None) -> str:
    """Block characters, one per value, scaled to ``top`` (default: the largest); 0 is a space."""
    peak = max(values, default=0) if top is None else top
    out = []
    for value in values:
        if value <= 0 or peak <= 0:
            out.append(" ")
        else:
            out.append(_SPARKS[min(len(_SPARKS) - 1, int(value / peak * (len(_SPARKS) - 1) + 0.5))])
    return "".join(out)


_STUB = re.compile(r"Active connections:\s*(\d+)\s+server accepts handled requests\s+(\d+)\s+"
                   r"(\d+)\s+(\d+)\s+Reading:\s*(\d+)\s+Writing:\s*(\d+)\s+Waiting:\s*(\d+)")


def parse_stub_status(text: str, at: float, previous: StubStatus | None = None) -> StubStatus:
    """NGINX's stub_status page as a record; ValueError for anything else."""
    match = _STUB.search(text)
    if match is None:
        raise ValueError(f"not a stub_status page: {text[:80]!r}")
    active, accepts, handled, requests, reading, writing, waiting = map(int, match.groups())
    rate = None
    if previous is not None and at > previous.at and requests >= previous.requests:
        rate = (requests - previous.requests) / (at - previous.at)
    return StubStatus(at=at, active=active, accepts=accepts, handled=handled, requests=requests,
                      reading=reading, writing=writing, waiting=waiting, requests_per_s=rate)


def _status_label(record: RequestRecord) -> str:
    if record.status is not None:
        return str(record.status)
    return "no answer" if record.outcome is Outcome.UNKNOWN else "refused/reset"


def probe_view(records: Iterable[RequestRecord], now: float, window_s: float,
               backends: Sequence[str], *, rate_per_s: float, path: str,
               total: int) -> ProbeView:
    """The probe stream over [now - window, now): each backend's share of the ok answers, status
    counts, p50/p99 latency, and per-second ok answers over the last SERIES_BUCKETS seconds."""
    recent = [r for r in records if now - window_s <= r.sent_at < now]
    ok = [r for r in recent if r.outcome is Outcome.OK]
    latencies = [r.latency_s for r in recent if r.latency_s is not None]
    by_backend = Counter(r.backend for r in ok if r.backend)
    # Buckets are whole wall-clock seconds, the last one the current (partial) second.
    current = math.floor(now)
    first = current - SERIES_BUCKETS + 1
    series = {name: [0] * SERIES_BUCKETS for name in backends}
    last_ok: dict[str, float] = {}
    for r in records:
        if r.outcome is not Outcome.OK or not r.backend:
            continue
        last_ok[r.backend] = max(last_ok.get(r.backend, 0.0), r.sent_at)
        index = math.floor(r.sent_at) - first
        if r.backend in series and 0 <= index < SERIES_BUCKETS:
            series[r.backend][index] += 1
    views = tuple(BackendView(
        name=name, answered=by_backend.get(name, 0),
        share=by_backend.get(name, 0) / len(ok) if ok else 0.0,
        per_s=float(series[name][-2]), series=tuple(series[name]),
        last_ok_at=last_ok.get(name)) for name in backends)
    statuses = Counter(_status_label(r) for r in recent)
    return ProbeView(
        rate_per_s=rate_per_s, path=path, window_s=window_s, sent=len(recent), ok=len(ok),
        failed=sum(r.outcome is Outcome.FAIL for r in recent),
        unknown=sum(r.outcome is Outcome.UNKNOWN for r in recent),
        statuses=tuple(sorted(statuses.items())),
        p50_ms=nearest_rank(latencies, 0.5) * 1000 if latencies else None,
        p99_ms=nearest_rank(latencies, 0.99) * 1000 if latencies else None,
        backends=views, total=total)


def _failed_try(status: str) -> bool:
    return not status[:1].isdigit() or status.startswith("5")


def ejection_after(tries: Sequence[float], since: float, now: float, gap_s: float,
                   lag_s: float = 0.0) -> tuple[float | None, bool]:
    """The last try of the first run of tries after a fault, relative to it, and whether it is
    settled (a gap longer than ``gap_s`` followed it): NGINX took the server out then.

    NGINX logs a try when its request ends, up to ``lag_s`` after the try began (a connect or
    read timeout), so a quiet log proves a gap only up to ``now - lag_s``."""
    end = None
    for at in sorted(t for t in tries if t >= since):
        if end is not None and at - end > gap_s:
            return end - since, True
        end = at
    seen_until = now - lag_s
    if end is None:
        return None, seen_until - since > gap_s
    return end - since, seen_until - end > gap_s


def nginx_view(entries: Iterable[AccessLogEntry], now: float, window_s: float,
               backends: Sequence[str], faults: Sequence[FaultView] = (), *,
               gap_s: float = 1.0, lag_s: float = 0.0,
               settled: Mapping[tuple[str, float], float | None] | None = None) -> NginxView:
    """NGINX's tries over [now - window, now) per upstream server; for a server with a fault in
    place, when NGINX stopped trying it (``ejection_after``; ``settled`` keeps values already
    settled, whose tries may have left the buffer since)."""
    entries = list(entries)
    recent = [e for e in entries if now - window_s <= e.msec < now]
    attempts = upstream_attempts(recent)
    since = {f.target: f.since for f in faults if f.state.startswith("in place")}
    after = upstream_attempts([e for e in entries if e.msec >= min(since.values(), default=now)])
    views = []
    for name in backends:
        mine = [a for a in attempts if a.backend == name]
        view = UpstreamView(name=name, tries=len(mine),
                            failed=sum(_failed_try(a.status) for a in mine),
                            last_try_at=max((a.started_at for a in mine), default=None))
        if name in since:
            key = (name, since[name])
            if settled is not None and key in settled:
                ejected, done = settled[key], True
            else:
                ejected, done = ejection_after(
                    [a.started_at for a in after if a.backend == name], since[name], now, gap_s,
                    lag_s)
            view = view.model_copy(update={"fault_since": since[name], "ejected_after_s": ejected,
                                           "ejection_settled": done})
        views.append(view)
    covered = min(window_s, now - min((e.msec for e in recent), default=now))
    return NginxView(
        window_s=window_s, requests=len(recent),
        requests_per_s=len(recent) / covered if covered > 0 else 0.0,
        retried=sum(len(e.upstream_addrs) > 1 for e in recent),
        no_live_upstream=sum(e.status == 502 and any(b not in backends and ":" not in b
                                                     for b in e.upstream_backends)
                             for e in recent),
        statuses=tuple(sorted(Counter(str(e.status) for e in recent).items())),
        upstreams=tuple(views))


def readiness_detail(detail: str) -> str:
    """A readiness answer made short: a backend's ``503 {"checks": {"redis": "failed"}}``
    becomes "503: redis failed"; anything else stays as it is."""
    status, _, body = detail.partition(" ")
    if not status.isdigit() or not body.startswith("{"):
        return detail
    try:
        checks = json.loads(body).get("checks") or {}
    except (ValueError, AttributeError):
        return status
    failed = [name for name, state in checks.items() if state != "ok"]
    return f"{status}: {', '.join(failed)} failed" if failed else status


def node_views(roles: Mapping[str, str], containers: Mapping[str, ContainerInfo], lab_name: str,
               ready: Mapping[str, tuple[bool, str]]) -> tuple[NodeView, ...]:
    """Every node's Docker state and its last readiness answer (pure)."""
    out = []
    for node, role in roles.items():
        info = containers.get(container_name(lab_name, node))
        state = info.status if info is not None else "missing"
        answer = ready.get(node)
        if state != "running":
            out.append(NodeView(name=node, role=role, state=state, ready=False, detail=state))
        elif answer is None:
            out.append(NodeView(name=node, role=role, state=state, ready=None))
        else:
            out.append(NodeView(name=node, role=role, state=state, ready=answer[0],
                                detail=answer[1]))
    return tuple(out)


def fault_views(containers: Mapping[str, ContainerInfo], lab_name: str) -> tuple[FaultView, ...]:
    """The fault record, each with whether it is still in place (pure)."""
    return tuple(FaultView(target=r.target, kind=r.kind, params=r.shown_params(), since=r.since,
                           by=r.who(), state=fault_record.state(r, containers, lab_name),
                           until=r.until)
                 for r in fault_record.parse(containers.values()))


def pool_view(sample: PoolSample) -> PoolView:
    return PoolView(at=sample.at, cl_active=sample.cl_active, cl_waiting=sample.cl_waiting,
                    sv_active=sample.sv_active, sv_idle=sample.sv_idle,
                    servers=(sample.sv_active + sample.sv_idle + sample.sv_used
                             + sample.sv_tested + sample.sv_login),
                    maxwait_s=sample.maxwait_s)


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
