"""Scheduled jobs: every node competes for the same wall-clock tick, one run per tick wins.

Tick number = floor(now / interval). Each node wakes at the start of every tick and calls
``with_job_lock``; the winner also claims the tick in Redis (so a node that wakes late,
after the winner already released, does not run the same tick twice), records the run in
``job_runs``, works for ``job_duration_s`` and then performs the fenced side effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from lab_backend import db
from lab_backend.config import Settings
from lab_backend.locks import JobLockStatus, LockHandle, LockService
from lab_backend.logs import event

JOBS = ("recurring-messages", "phone-linking-recovery")


@dataclass(frozen=True)
class RunRecord:
    """What one executed run did (the value ``with_job_lock`` hands back)."""

    tick: int
    outcome: str


class JobScheduler:
    """Runs each job once per tick on whichever node wins the lock, until ``stop()``."""

    def __init__(self, settings: Settings, locks: LockService,
                 pool_getter: Callable[[], AsyncConnectionPool | None]):
        self.settings = settings
        self.locks = locks
        self._pool = pool_getter
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._running_runs = 0

    def start(self) -> None:
        """Start one loop per job."""
        for job in JOBS:
            self._tasks.append(asyncio.create_task(self._loop(job), name=f"job:{job}"))

    def request_stop(self) -> None:
        """No new runs from now on; runs in progress continue to their end."""
        self._stopping.set()

    async def stop(self, timeout_s: float) -> None:
        """Stop scheduling and wait up to ``timeout_s`` for runs in progress, then cancel."""
        self._stopping.set()
        if not self._tasks:
            return
        done, pending = await asyncio.wait(self._tasks, timeout=max(timeout_s, 0.01))
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        event("jobs.stopped", finished=len(done), cancelled=len(pending))

    async def _loop(self, job: str) -> None:
        interval = self.settings.job_interval_s
        while not self._stopping.is_set():
            now = time.time()
            next_tick = math.floor(now / interval) + 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(next_tick * interval - now):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            try:
                await self.run_once(job, next_tick)
            except Exception as exc:  # noqa: BLE001 - a job error must not end the loop
                event("job.error", job=job, tick=next_tick, reason=exc, level=logging.ERROR)

    async def run_once(self, job: str, tick: int) -> str:
        """One scheduling decision for ``job`` at ``tick``; returns what happened."""
        settings = self.settings
        if self._pool() is None:
            event("job.skipped", job=job, tick=tick, reason="database_not_ready")
            return "skipped"
        if not settings.locking:
            # Negative control: every node runs every tick, no lock, no fencing token.
            record = await self._execute(job, tick, None)
            return record.outcome
        ttl_ms = int(settings.lock_ttl_s * 1000)

        async def run(handle: LockHandle) -> RunRecord:
            if not await self.locks.claim_tick(handle, tick):
                event("job.skipped", job=job, tick=tick, reason="tick_already_run")
                return RunRecord(tick, "tick_already_run")
            return await self._execute(job, tick, handle.fencing_token)

        result = await self.locks.with_job_lock(job, ttl_ms, run, renew=settings.lock_renewal)
        if result.status is JobLockStatus.UNAVAILABLE:
            event("job.skipped", job=job, tick=tick, reason="redis_unavailable")
            return "redis_unavailable"
        if result.status is JobLockStatus.SKIPPED:
            event("job.skipped", job=job, tick=tick, reason="lock_held_by_other")
            return "skipped"
        return result.value.outcome if result.value else str(result.status)

    async def _execute(self, job: str, tick: int, token: int | None) -> RunRecord:
        pool = self._pool()
        assert pool is not None
        budget = self.settings.dependency_timeout_s * 2
        node = self.settings.node_id
        try:
            run_id = await db.bounded(db.start_job_run(pool, job, node, token, tick), budget)
        except (TimeoutError, *db.DatabaseError) as exc:
            event("job.skipped", job=job, tick=tick, reason=f"database: {exc or 'timeout'}",
                  level=logging.WARNING)
            return RunRecord(tick, "database_unavailable")
        event("job.started", job=job, tick=tick, fencing_token=token, run_id=run_id)
        outcome = "error"
        try:
            # The simulated work: this is where a paused node's lease runs out.
            await asyncio.sleep(self.settings.job_duration_s)
            applied = await db.bounded(
                db.fenced_write(pool, job, node, token, fencing=self.settings.fencing), budget)
            outcome = "ok" if applied else "fenced"
        except (TimeoutError, *db.DatabaseError) as exc:
            event("job.side_effect_failed", job=job, tick=tick, reason=exc or "timeout",
                  level=logging.WARNING)
            outcome = "database_unavailable"
        finally:
            with contextlib.suppress(TimeoutError, *db.DatabaseError):
                await db.bounded(db.finish_job_run(pool, run_id, outcome), budget)
            event("job.finished", job=job, tick=tick, fencing_token=token, outcome=outcome)
        return RunRecord(tick, outcome)
