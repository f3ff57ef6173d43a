"""Connection-pool load: many clients through PgBouncer, and both sides' view of the pool.

- ``PoolSampler``: a background thread that reads PgBouncer's ``SHOW POOLS`` (one
  ``PoolSample`` per row of the app database) and PostgreSQL's count of the app user's client
  backends (``ServerActivitySample``) every interval; ``stats()`` reads ``SHOW STATS``.
- ``run_pool_load``: hundreds of client connections to PgBouncer at once, each running short
  transactions until a deadline, so that far more clients want a server connection than the
  pool has (``cl_waiting`` > 0) and PgBouncer must hold the server side at its bound.
- ``probe_client_limit`` / ``max_client_conn_error``: open one client more than
  ``max_client_conn`` allows and keep the refusal PgBouncer sends.

The sampler's own direct PostgreSQL session logs in as the app's user too, so
``pg_stat_activity`` counts it on top of PgBouncer's server connections:
``PoolSampler.own_connections`` says how many (pass it to ``check_pool_bound``). The admin
console session is PgBouncer's own pseudo-database and opens no server connection.

Everything is asyncio + psycopg's async API, so every read and connect is bounded by a
timeout even when a node is frozen (a paused container still ACKs TCP, so a blocking read
would wait forever). Only the 127.0.0.1 DSNs the lab publishes are used. PgBouncer 1.18 has
no prepared-statement tracking and its admin console speaks only the simple query protocol
(docs/semantics.md §3): app connections use ``prepare_threshold=None``, admin connections
``AsyncClientCursor`` and autocommit.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import resource
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import psycopg

from lab.history import PoolSample, PoolStats, ServerActivitySample

__all__ = [
    "ClientLimitProbe",
    "PoolLoadResult",
    "PoolSampler",
    "max_client_conn_error",
    "probe_client_limit",
    "run_pool_load",
]

READ_TIMEOUT_S = 5.0            # one SHOW POOLS / SHOW STATS / count(*) round trip
CONNECT_TIMEOUT_S = 5
MAX_CLIENTS = 5_000             # run_pool_load refuses more: one process, one event loop
CONNECT_CONCURRENCY = 64        # connects in flight at once (SCRAM costs PgBouncer CPU)
_ERROR_SAMPLES = 5
_SAMPLER_ERRORS_KEPT = 20
FD_MARGIN = 64                  # descriptors the process needs beside the client sockets

_POOL_COLUMNS = ("cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "sv_tested",
                 "sv_login", "maxwait", "maxwait_us")
_PG_COUNT = ("SELECT count(*) FROM pg_stat_activity "
             "WHERE usename = %s AND backend_type = 'client backend'")

T = TypeVar("T")


def _admin_connect(dsn: str) -> Awaitable[psycopg.AsyncConnection[Any]]:
    # The admin console speaks the simple query protocol only.
    return psycopg.AsyncConnection.connect(dsn, autocommit=True,
                                           cursor_factory=psycopg.AsyncClientCursor,
                                           connect_timeout=CONNECT_TIMEOUT_S)


def _app_connect(dsn: str, timeout_s: float) -> Awaitable[psycopg.AsyncConnection[Any]]:
    # Transaction pooling: a prepared statement would land on another server connection.
    return psycopg.AsyncConnection.connect(dsn, autocommit=True, prepare_threshold=None,
                                           connect_timeout=max(1, math.ceil(timeout_s)))


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"timeout ({type(exc).__name__})"
    return f"{type(exc).__name__}: {str(exc).strip()}"


async def _close(conn: psycopg.AsyncConnection[Any] | None) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), READ_TIMEOUT_S)


def _rows_as_dicts(cur: psycopg.AsyncCursor[Any],
                   rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    names = [column.name for column in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in rows]


async def _show(conn: psycopg.AsyncConnection[Any], command: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        cur = await conn.execute(command)
        return _rows_as_dicts(cur, await cur.fetchall())
    return await asyncio.wait_for(read(), READ_TIMEOUT_S)


def pool_samples_from_rows(rows: list[dict[str, Any]], at: float,
                           database: str) -> list[PoolSample]:
    """The ``SHOW POOLS`` rows of one database as ``PoolSample`` records read at ``at``."""
    out = []
    for row in rows:
        if row.get("database") != database:
            continue
        n = {name: int(row.get(name) or 0) for name in _POOL_COLUMNS}
        out.append(PoolSample(
            at=at, cl_active=n["cl_active"], cl_waiting=n["cl_waiting"],
            sv_active=n["sv_active"], sv_idle=n["sv_idle"], sv_used=n["sv_used"],
            sv_tested=n["sv_tested"], sv_login=n["sv_login"],
            maxwait_s=n["maxwait"] + n["maxwait_us"] / 1e6,
            database=str(row["database"]), user=str(row.get("user") or ""),
            pool_mode=str(row.get("pool_mode") or "")))
    return out


async def _read_stats(admin_dsn: str, database: str) -> PoolStats:
    conn = await asyncio.wait_for(_admin_connect(admin_dsn), CONNECT_TIMEOUT_S + 1)
    try:
        at = time.time()
        rows = await _show(conn, "SHOW STATS")
    finally:
        await _close(conn)
    for row in rows:
        if row.get("database") == database:
            return PoolStats(at=at, total_xact_count=int(row["total_xact_count"]),
                             total_query_count=int(row["total_query_count"]))
    raise LookupError(f"SHOW STATS has no row for database {database!r}")


# --- the sampler -----------------------------------------------------------------------------


class PoolSampler:
    """Samples ``SHOW POOLS`` and ``pg_stat_activity`` in a background thread every interval.

    ``start()`` connects first, so a wrong DSN fails there and not silently in the thread.
    A failed read is recorded in ``errors`` and the connection opened again at the next tick.
    The thread stops by itself after ``max_duration_s``; ``stop()`` takes one last reading,
    so the final sample is later than anything the caller did before stopping.
    """

    def __init__(self, admin_dsn: str, postgres_dsn: str, app_user: str, database: str,
                 interval_s: float = 0.25, *, max_duration_s: float = 300.0):
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        if not max_duration_s > 0:
            raise ValueError(f"max_duration_s must be > 0, got {max_duration_s}")
        self.admin_dsn = admin_dsn
        self.postgres_dsn = postgres_dsn
        self.app_user = app_user
        self.database = database
        self.interval_s = interval_s
        self.max_duration_s = max_duration_s
        self._lock = threading.Lock()
        self._samples: list[PoolSample] = []
        self._activity: list[ServerActivitySample] = []
        self._errors: list[str] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_error: BaseException | None = None
        self._own = 0
        self._admin: psycopg.AsyncConnection[Any] | None = None
        self._pg: psycopg.AsyncConnection[Any] | None = None

    # -- snapshots --------------------------------------------------------------------------

    @property
    def samples(self) -> list[PoolSample]:
        """Every ``SHOW POOLS`` reading of the app database so far (a copy)."""
        with self._lock:
            return list(self._samples)

    @property
    def activity(self) -> list[ServerActivitySample]:
        """Every ``pg_stat_activity`` count so far (a copy)."""
        with self._lock:
            return list(self._activity)

    @property
    def errors(self) -> list[str]:
        """Failed readings (the first few), as ``Type: message``."""
        with self._lock:
            return list(self._errors)

    @property
    def own_connections(self) -> int:
        """The sampler's sessions that ``pg_stat_activity`` counts under the app user (0 or 1)."""
        return self._own

    def stats(self) -> PoolStats:
        """PgBouncer's ``SHOW STATS`` totals for the app database, read now on a fresh
        connection."""
        return asyncio.run(_read_stats(self.admin_dsn, self.database))

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        """Connect both sessions and start sampling; connection errors are raised here."""
        if self._thread is not None:
            raise RuntimeError("PoolSampler already started")
        self._thread = threading.Thread(target=self._run, name="pool-sampler", daemon=True)
        self._thread.start()
        if not self._ready.wait(2 * (CONNECT_TIMEOUT_S + 1) + 2 * READ_TIMEOUT_S):
            self._stop.set()
            raise TimeoutError("PoolSampler: no first connection to PgBouncer and PostgreSQL "
                               "in time")
        if self._start_error is not None:
            self._thread.join(READ_TIMEOUT_S)
            raise self._start_error
        return self

    def stop(self) -> None:
        """Stop sampling after one last reading and close both sessions."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2 * (CONNECT_TIMEOUT_S + 1) + 3 * READ_TIMEOUT_S)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - handed to start() or recorded
            if not self._ready.is_set():
                self._start_error = exc
            else:
                self._record_error(exc)
        finally:
            self._ready.set()

    async def _main(self) -> None:
        await self._connect()
        cur = await asyncio.wait_for(self._pg.execute("SELECT current_user"), READ_TIMEOUT_S)
        row = await cur.fetchone()
        # The count filters on the app user; our direct session is one of them when it is too.
        self._own = 1 if row is not None and row[0] == self.app_user else 0
        self._ready.set()
        deadline = time.monotonic() + self.max_duration_s
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                tick = time.monotonic()
                await self._sample_once()
                pause = self.interval_s - (time.monotonic() - tick)
                # The stop event is a threading.Event: poll it in slices of the interval.
                end = time.monotonic() + max(0.0, pause)
                while not self._stop.is_set() and time.monotonic() < end:
                    await asyncio.sleep(min(0.05, max(0.0, end - time.monotonic())))
            if self._stop.is_set():
                await self._sample_once()
        finally:
            await _close(self._admin)
            await _close(self._pg)

    async def _connect(self) -> None:
        if self._admin is None or self._admin.closed:
            self._admin = await asyncio.wait_for(_admin_connect(self.admin_dsn),
                                                 CONNECT_TIMEOUT_S + 1)
        if self._pg is None or self._pg.closed:
            self._pg = await asyncio.wait_for(
                psycopg.AsyncConnection.connect(self.postgres_dsn, autocommit=True,
                                                connect_timeout=CONNECT_TIMEOUT_S),
                CONNECT_TIMEOUT_S + 1)

    async def _sample_once(self) -> None:
        try:
            await self._connect()
            assert self._admin is not None and self._pg is not None
            # SHOW POOLS first, then PostgreSQL: check_pool_bound brackets each
            # pg_stat_activity reading between the SHOW POOLS readings around it.
            at = time.time()
            rows = await _show(self._admin, "SHOW POOLS")
            pool = pool_samples_from_rows(rows, at, self.database)
            with self._lock:
                self._samples.extend(pool)
            pg_at = time.time()
            cur = await asyncio.wait_for(self._pg.execute(_PG_COUNT, (self.app_user,)),
                                         READ_TIMEOUT_S)
            row = await cur.fetchone()
            with self._lock:
                self._activity.append(ServerActivitySample(pg_at, int(row[0]) if row else 0))
        except Exception as exc:  # noqa: BLE001 - a failed reading is data, not a crash
            self._record_error(exc)
            # A timed-out session may be mid-query: drop it, reconnect at the next tick.
            for conn in (self._admin, self._pg):
                if conn is not None and (isinstance(exc, TimeoutError) or conn.broken):
                    await _close(conn)
            if isinstance(exc, TimeoutError):
                self._admin = self._pg = None

    def _record_error(self, exc: BaseException) -> None:
        with self._lock:
            if len(self._errors) < _SAMPLER_ERRORS_KEPT:
                self._errors.append(f"{time.time():.3f} {_error_text(exc)}")


# --- many clients --------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolLoadResult:
    """What the load clients did: transactions committed, errors, and the load phase's length."""

    transactions: int
    errors: int
    error_samples: tuple[str, ...]
    clients: int                # client connections that were open when the load started
    duration_s: float           # from the start signal until the last client finished

    @property
    def transactions_per_s(self) -> float:
        return self.transactions / self.duration_s if self.duration_s > 0 else 0.0


class _Tally:
    def __init__(self, max_transactions: int):
        self.transactions = 0
        self.errors = 0
        self.samples: list[str] = []
        self.max_transactions = max_transactions

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        text = _error_text(exc)
        if len(self.samples) < _ERROR_SAMPLES and text not in self.samples:
            self.samples.append(text)


async def _bounded(make: Callable[[], Awaitable[T]], timeout_s: float) -> T:
    return await asyncio.wait_for(make(), timeout_s)


async def _load(dsn: str, clients: int, duration_s: float, query: str, connect_timeout_s: float,
                op_timeout_s: float, max_transactions: int) -> PoolLoadResult:
    tally = _Tally(max_transactions)
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect() -> psycopg.AsyncConnection[Any] | None:
        async with gate:
            try:
                return await _bounded(lambda: _app_connect(dsn, connect_timeout_s),
                                      connect_timeout_s + 1)
            except Exception as exc:  # noqa: BLE001 - a refused client is counted, not raised
                tally.error(exc)
                return None

    conns = list(await asyncio.gather(*(connect() for _ in range(clients))))
    try:
        opened = sum(conn is not None for conn in conns)
        start = time.monotonic()
        deadline = start + duration_s

        async def client(index: int) -> None:
            while time.monotonic() < deadline and tally.transactions < tally.max_transactions:
                conn = conns[index]
                if conn is None or conn.closed or conn.broken:
                    await _close(conn)
                    conns[index] = None
                    # Reconnect, but never past the deadline and not in a tight loop.
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    wait_s = min(connect_timeout_s, left)
                    try:
                        conns[index] = conn = await _bounded(
                            lambda w=wait_s: _app_connect(dsn, w), wait_s + 1)
                    except Exception as exc:  # noqa: BLE001
                        tally.error(exc)
                        await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
                        continue
                try:
                    # autocommit: each statement is its own transaction, returned to the pool
                    # by PgBouncer as soon as it ends.
                    await _bounded(lambda c=conn: c.execute(query), op_timeout_s)
                    tally.transactions += 1
                except Exception as exc:  # noqa: BLE001
                    tally.error(exc)
                    if isinstance(exc, TimeoutError):
                        # Cancelled mid-query: the session's state is unknown; start afresh.
                        await _close(conn)
                        conns[index] = None

        if opened:
            await asyncio.gather(*(client(i) for i, conn in enumerate(conns) if conn is not None))
        elapsed = time.monotonic() - start
    finally:
        await asyncio.gather(*(_close(conn) for conn in conns))
    return PoolLoadResult(tally.transactions, tally.errors, tuple(tally.samples), opened,
                          elapsed if opened else 0.0)


def run_pool_load(pgbouncer_dsn: str, *, clients: int = 300, duration_s: float = 10.0,
                  query: str = "SELECT pg_sleep(0.02)", connect_timeout_s: float = 10,
                  op_timeout_s: float = 10.0, max_transactions: int = 1_000_000) -> PoolLoadResult:
    """Hold ``clients`` connections to PgBouncer, each running short transactions until the
    deadline.

    All clients connect first (``CONNECT_CONCURRENCY`` at a time), then run together for
    ``duration_s``. Each statement runs in autocommit, so it is one transaction. A statement
    that takes longer than ``op_timeout_s`` counts as an error (its outcome is unknown).
    Bounded by ``clients`` <= ``MAX_CLIENTS``, ``max_transactions`` and the deadline.
    """
    if not 1 <= clients <= MAX_CLIENTS:
        raise ValueError(f"clients must be in 1..{MAX_CLIENTS}, got {clients}")
    if not duration_s >= 0:
        raise ValueError(f"duration_s must be >= 0, got {duration_s}")
    before, soft, hard = _raise_fd_limit(clients + FD_MARGIN)
    coro = _load(pgbouncer_dsn, clients, duration_s, query, connect_timeout_s, op_timeout_s,
                 max_transactions)
    # A backstop only: every connect and statement above has its own timeout.
    guard = (math.ceil(clients / CONNECT_CONCURRENCY) * (connect_timeout_s + 1) + duration_s
             + 2 * op_timeout_s + 2 * connect_timeout_s + 10)
    try:
        return asyncio.run(_guarded(coro, guard))
    finally:
        _restore_fd_limit(before, soft, hard)


async def _guarded(coro: Awaitable[T], timeout_s: float) -> T:
    return await asyncio.wait_for(coro, timeout_s)


# --- max_client_conn -----------------------------------------------------------------------


def _raise_fd_limit(needed: int) -> tuple[int, int, int]:
    """Raise RLIMIT_NOFILE's soft limit toward ``needed`` (at most the hard limit).

    Returns (soft before, soft now, hard).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    now, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, now, hard


def _restore_fd_limit(before: int, now: int, hard: int) -> None:
    if now != before:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (before, hard))


@dataclass(frozen=True)
class ClientLimitProbe:
    """The outcome of opening clients until PgBouncer refused one (or the attempt ran out)."""

    attempted: int              # connections tried
    opened: int                 # of ours accepted before the refusal (others' count too)
    error: str                  # the refused client's error text, exactly as psycopg gave it
    refused: bool               # a connection was refused (False: every one got in, or we gave up)


async def _probe(dsn: str, attempts: int, timeout_s: float) -> ClientLimitProbe:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    stop = asyncio.Event()
    conns: list[psycopg.AsyncConnection[Any]] = []
    errors: list[str] = []
    tried = 0

    async def one() -> None:
        nonlocal tried
        async with gate:
            if stop.is_set():
                return
            tried += 1
            try:
                conn = await _bounded(lambda: _app_connect(dsn, timeout_s), timeout_s + 1)
            except Exception as exc:  # noqa: BLE001 - the refusal is what we came for
                # Exactly what the client was told; psycopg prefixes libpq's context.
                errors.append(str(exc).strip() if str(exc).strip() else _error_text(exc))
                stop.set()
                return
            conns.append(conn)

    try:
        await asyncio.gather(*(one() for _ in range(attempts)))
        opened = len(conns)
    finally:
        await asyncio.gather(*(_close(conn) for conn in conns))
    if errors:
        return ClientLimitProbe(tried, opened, errors[0], True)
    return ClientLimitProbe(tried, opened, f"no refusal: all {opened} client connections were "
                            "accepted", False)


def probe_client_limit(pgbouncer_dsn: str, max_client_conn: int, *,
                       connect_timeout_s: float = 10, timeout_s: float = 120.0) -> ClientLimitProbe:
    """Open up to ``max_client_conn + 1`` clients, stop at the first refusal, close them all.

    Other clients of PgBouncer (the backends, a sampler's admin session) take slots too, so
    the refusal may come before our own ``max_client_conn + 1``-th connection.
    """
    if not 1 <= max_client_conn <= 100_000:
        raise ValueError(f"max_client_conn must be in 1..100000, got {max_client_conn}")
    attempts = max_client_conn + 1
    before, soft, hard = _raise_fd_limit(attempts + FD_MARGIN)
    try:
        if soft != resource.RLIM_INFINITY and soft < attempts + FD_MARGIN:
            return ClientLimitProbe(0, 0, (
                f"cannot try {attempts} client connections: this process may open only {soft} "
                f"file descriptors (RLIMIT_NOFILE hard limit {hard}); raise it with "
                f"`ulimit -n {attempts + FD_MARGIN}`"), False)
        try:
            return asyncio.run(_guarded(_probe(pgbouncer_dsn, attempts, connect_timeout_s),
                                        timeout_s))
        except TimeoutError:
            return ClientLimitProbe(attempts, 0, f"gave up after {timeout_s:.0f} s opening "
                                    f"{attempts} client connections", False)
    finally:
        _restore_fd_limit(before, soft, hard)


def max_client_conn_error(pgbouncer_dsn: str, max_client_conn: int) -> str:
    """The exact error text of the client that exceeds ``max_client_conn`` (or why none was
    refused)."""
    return probe_client_limit(pgbouncer_dsn, max_client_conn).error
