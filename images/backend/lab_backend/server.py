"""uvicorn run programmatically, with startup retries and a graceful SIGTERM drain.

Lifecycle:

1. The lifespan starts at once (``/health/live`` answers from the first second); a
   bootstrap task retries the database until it answers, creates the schema, then starts
   the job scheduler. ``/health/ready`` is 503 until then.
2. SIGTERM: readiness turns 503 and no new job runs start; requests keep being served for
   ``LAB_DRAIN_S``; then uvicorn stops accepting, waits for in-flight requests, and the
   lifespan shutdown waits for runs in progress, releases held locks and closes the pools.
   Everything is budgeted to end within ``LAB_STOP_TIMEOUT_S``. A second signal skips the
   drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from lab_backend import db
from lab_backend.app import AppState, BackendIdHeader, create_app, make_redis
from lab_backend.config import Settings
from lab_backend.jobs import JobScheduler
from lab_backend.locks import LockService
from lab_backend.logs import event

# Part of the stop budget kept for closing pools and the interpreter's own exit.
_EXIT_MARGIN_S = 1.0
# Startup retries of the database: every 0.1 s for the first 10 s, then backing off.
_STARTUP_RETRY_S = 0.1
_STARTUP_FAST_ATTEMPTS = 100


class Lifecycle:
    """Owns the app state and the phases of startup and shutdown."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.state = AppState(settings=settings, redis=make_redis(settings),
                              locks=LockService(make_redis(settings, retry_dropped=True),
                                                settings.node_id))
        self.stop_deadline: float | None = None  # time.monotonic() by which we must be gone
        self._bootstrap: asyncio.Task | None = None

    def remaining_s(self) -> float:
        """Seconds left of the stop budget (the full budget before a stop was asked)."""
        if self.stop_deadline is None:
            return self.settings.stop_timeout_s
        return max(0.0, self.stop_deadline - time.monotonic())

    def begin_drain(self) -> None:
        """Readiness 503, no new job runs; called from the signal handler."""
        if self.state.draining:
            return
        self.state.draining = True
        self.stop_deadline = time.monotonic() + self.settings.stop_timeout_s - _EXIT_MARGIN_S
        if self.state.scheduler is not None:
            self.state.scheduler.request_stop()
        event("shutdown.draining", drain_s=self.settings.drain_s,
              stop_timeout_s=self.settings.stop_timeout_s)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        event("startup.begin", locking=self.settings.locking, fencing=self.settings.fencing,
              job_interval_s=self.settings.job_interval_s, lock_ttl_s=self.settings.lock_ttl_s)
        self._bootstrap = asyncio.create_task(self._bootstrap_loop(), name="bootstrap")
        try:
            yield
        finally:
            await self._shutdown()

    async def _bootstrap_loop(self) -> None:
        settings = self.settings
        pool = None
        attempt, delay = 0, _STARTUP_RETRY_S
        while not self.state.draining:
            attempt += 1
            try:
                if pool is None:
                    # The pool is opened only once the database answers: psycopg_pool's own
                    # reconnects back off 1, 2, 4, 8 s, so a pool opened before PgBouncer was
                    # up made a backend ready up to 8 s after its database (measured).
                    await db.bounded(db.answers(settings.database_url), self.state.db_timeout_s)
                    pool = db.make_pool(settings.database_url, timeout_s=self.state.db_timeout_s)
                    self.state._pool_candidate = pool
                    await pool.open(wait=False)
                await db.bounded(db.ensure_schema(pool, settings.seed_password), 10)
                break
            except Exception as exc:  # noqa: BLE001 - keep retrying whatever the database says
                # Every 0.1 s while the lab starts its nodes (a failed attempt costs ~2 ms),
                # then backing off to 2 s; one log line per ten attempts.
                if attempt == 1 or attempt % 10 == 0:
                    event("startup.database_not_ready", attempt=attempt, retry_in_s=delay,
                          reason=exc or "timeout", level=logging.WARNING)
                await asyncio.sleep(delay)
                if attempt >= _STARTUP_FAST_ATTEMPTS:
                    delay = min(delay * 2, 2.0)
        else:
            return
        self.state.pool = pool
        scheduler = JobScheduler(settings, self.state.locks, lambda: self.state.pool)
        self.state.scheduler = scheduler
        scheduler.start()
        self.state.startup_complete = True
        event("startup.complete", attempts=attempt)

    async def _shutdown(self) -> None:
        self.begin_drain()  # no-op after a signal; covers a lifespan ended another way
        if self._bootstrap is not None and not self._bootstrap.done():
            self._bootstrap.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._bootstrap
        if self.state.scheduler is not None:
            await self.state.scheduler.stop(timeout_s=max(0.1, self.remaining_s() - 1.0))
        try:
            async with asyncio.timeout(max(0.1, min(1.0, self.remaining_s() - 0.5))):
                released = await self.state.locks.release_all()
            event("shutdown.locks_released", count=released)
        except Exception as exc:  # noqa: BLE001 - leases expire on their own
            event("shutdown.locks_not_released", reason=exc or "timeout", level=logging.WARNING)
        pool = self.state._pool_candidate
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.close(timeout=max(0.1, min(1.0, self.remaining_s())))
        for client in (self.state.redis, self.state.locks.redis):
            with contextlib.suppress(Exception):
                await client.aclose()
        event("shutdown.complete")


class DrainingServer(uvicorn.Server):
    """uvicorn's server, but a signal first drains for ``drain_s`` before it stops accepting."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle):
        super().__init__(config)
        self.lifecycle = lifecycle
        self._drain_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded in _captured_signals: uvicorn would re-raise it after a clean stop and
        # the process would end "killed by SIGTERM" instead of exiting 0.
        if self._drain_until is not None:
            self.should_exit = True  # second signal: stop accepting now
            return
        self._drain_until = time.monotonic() + self.lifecycle.settings.drain_s
        self.lifecycle.begin_drain()

    async def on_tick(self, counter: int) -> bool:
        if self._drain_until is not None and time.monotonic() >= self._drain_until:
            self.should_exit = True
        return await super().on_tick(counter)


def run(settings: Settings) -> None:
    """Serve until a signal; returns after the graceful stop."""
    lifecycle = Lifecycle(settings)
    app = create_app(lifecycle.state, lifespan=lifecycle.lifespan)
    grace = max(1.0, settings.stop_timeout_s - settings.drain_s - 3.0)
    config = uvicorn.Config(
        BackendIdHeader(app, settings.node_id),
        host="0.0.0.0",
        port=settings.port,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=grace,
        timeout_keep_alive=5,
    )
    server = DrainingServer(config, lifecycle)
    asyncio.run(server.serve())


