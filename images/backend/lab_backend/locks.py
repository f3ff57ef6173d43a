"""Job locks in a single Redis, with fencing tokens.

A lock is the key ``lab:lock:<job>`` holding ``<node>|<random hex>|<fencing token>``, set with
``SET NX PX`` inside a Lua script that also ``INCR``\\s the job's counter ``lab:fence:<job>``,
so taking the lock and taking the fencing token are one atomic step. Release and extension
compare the whole value first (Lua compare-and-delete / compare-and-pexpire), so a holder
whose lease expired can never delete or extend the next holder's lock.

A lease is not mutual exclusion: a holder paused past the TTL, or a Redis that restarts
without persistence, lets two holders run at once. The fencing token is the safety net — the
protected resource rejects a token lower than the last one it accepted. When the counter key
is missing (first use, or Redis lost its data) it is seeded from Redis' clock in
microseconds (about 1.8e15: fits a bigint and a JSON number exactly), so tokens keep
increasing across such a loss as long as the clock does not step back.

Decisions are logged one line each: ``lock.acquired``, ``lock.held_by_other``,
``lock.released``, ``lock.lost`` (plus ``lock.unavailable`` when Redis does not answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from lab_backend.logs import event

LOCK_PREFIX = "lab:lock:"
FENCE_PREFIX = "lab:fence:"
TICK_PREFIX = "lab:tick:"
_SCAN_LIMIT = 1000

# KEYS[1] lock key, KEYS[2] fence counter; ARGV[1] owner prefix, ARGV[2] ttl ms.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[2], now[1] .. string.format('%06d', tonumber(now[2])))
end
redis.call('INCR', KEYS[2])
-- Read it back as a string: Lua numbers print as 1.8e+15 and would corrupt the value.
local fence = redis.call('GET', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. fence, 'PX', ARGV[2])
return fence
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# Claims a scheduler tick for a job: true only if no run recorded this tick or a later one.
_CLAIM_TICK = """
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) <= last then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


@dataclass(frozen=True)
class LockHandle:
    """A lock this process acquired: the exact value to compare, and its fencing token."""

    job: str
    node: str
    value: str
    fencing_token: int
    ttl_ms: int
    acquired_at: float  # time.monotonic() just before the acquiring call was sent

    @property
    def key(self) -> str:
        return LOCK_PREFIX + self.job


@dataclass(frozen=True)
class ActiveLock:
    """A lock currently present in Redis, as ``/admin/locks`` shows it."""

    job: str
    holder: str
    fencing_token: int | None
    ttl_ms: int


class JobLockStatus(enum.StrEnum):
    """How a ``with_job_lock`` call ended."""

    RAN = "ran"                    # acquired, ran, kept the lease to the end
    LOST = "lost"                  # acquired and ran, but the lease was lost meanwhile
    SKIPPED = "skipped"            # another node holds the lock
    UNAVAILABLE = "unavailable"    # Redis did not answer: the job did not run


@dataclass(frozen=True)
class JobLockResult:
    """The outcome of ``with_job_lock``: status, fencing token used, the job's return value."""

    status: JobLockStatus
    fencing_token: int | None = None
    value: Any = None
    holder: str | None = None


def _parse_value(raw: str) -> tuple[str, int | None]:
    node, _, rest = raw.partition("|")
    _, _, fence = rest.rpartition("|")
    try:
        return node, int(fence)
    except ValueError:
        return node, None


class LockService:
    """Acquire, extend, release and inspect job locks for one node."""

    def __init__(self, redis: Redis, node_id: str):
        self.redis = redis
        self.node_id = node_id
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        self._extend = redis.register_script(_EXTEND)
        self._claim_tick = redis.register_script(_CLAIM_TICK)
        # Locks this process believes it holds, so shutdown can release them.
        self.held: dict[str, LockHandle] = {}

    async def acquire_job_lock(self, job: str, ttl_ms: int) -> LockHandle | None:
        """Take the job's lock and a fresh fencing token; None (logged) when another node
        holds it."""
        owner = f"{self.node_id}|{secrets.token_hex(16)}"
        started = time.monotonic()
        fence = await self._acquire(keys=[LOCK_PREFIX + job, FENCE_PREFIX + job],
                                    args=[owner, int(ttl_ms)])
        if fence is None:
            holder = await self._holder(job)
            event("lock.held_by_other", job=job, holder=holder or "?")
            return None
        handle = LockHandle(job=job, node=self.node_id, value=f"{owner}|{int(fence)}",
                            fencing_token=int(fence), ttl_ms=int(ttl_ms), acquired_at=started)
        self.held[job] = handle
        event("lock.acquired", job=job, fencing_token=handle.fencing_token, ttl_ms=ttl_ms)
        return handle

    async def release_job_lock(self, handle: LockHandle) -> bool:
        """Delete the lock only if ``handle`` still holds it; False (logged as lost) otherwise."""
        self.held.pop(handle.job, None)
        deleted = await self._release(keys=[handle.key], args=[handle.value])
        if deleted:
            event("lock.released", job=handle.job, fencing_token=handle.fencing_token)
            return True
        event("lock.lost", job=handle.job, fencing_token=handle.fencing_token,
              reason="expired_or_taken_before_release", level=logging.WARNING)
        return False

    async def extend(self, handle: LockHandle, ttl_ms: int | None = None) -> bool:
        """Reset the lease to ``ttl_ms`` if ``handle`` still holds it; False when it does not."""
        ttl = handle.ttl_ms if ttl_ms is None else int(ttl_ms)
        return bool(await self._extend(keys=[handle.key], args=[handle.value, ttl]))

    async def is_job_lock_held(self, job: str) -> bool:
        """True when any node currently holds the job's lock."""
        return bool(await self.redis.exists(LOCK_PREFIX + job))

    async def force_release_job_lock(self, job: str) -> bool:
        """Delete the job's lock whoever holds it (an operator's action); True if one existed."""
        deleted = bool(await self.redis.delete(LOCK_PREFIX + job))
        event("lock.force_released", job=job, existed=deleted, level=logging.WARNING)
        return deleted

    async def get_active_job_locks(self) -> list[ActiveLock]:
        """Every lock present in Redis, with holder, fencing token and remaining TTL."""
        found: list[ActiveLock] = []
        async for key in self.redis.scan_iter(match=LOCK_PREFIX + "*", count=100):
            key = key.decode() if isinstance(key, bytes) else key
            raw = await self.redis.get(key)
            ttl_ms = await self.redis.pttl(key)
            if raw is None or ttl_ms < 0:
                continue  # expired between SCAN and GET
            raw = raw.decode() if isinstance(raw, bytes) else raw
            holder, fence = _parse_value(raw)
            found.append(ActiveLock(job=key[len(LOCK_PREFIX):], holder=holder,
                                    fencing_token=fence, ttl_ms=int(ttl_ms)))
            if len(found) >= _SCAN_LIMIT:
                break
        return sorted(found, key=lambda lock: lock.job)

    async def claim_tick(self, handle: LockHandle, tick: int) -> bool:
        """Under the lock: True if no node ran this job for ``tick`` (or a later tick) yet."""
        keep_ms = max(handle.ttl_ms * 10, 60_000)
        return bool(await self._claim_tick(keys=[TICK_PREFIX + handle.job],
                                           args=[int(tick), keep_ms]))

    async def with_job_lock(self, job: str, ttl_ms: int,
                            run: Callable[[LockHandle], Awaitable[Any]],
                            *, extend_every_s: float | None = None,
                            renew: bool = True) -> JobLockResult:
        """Acquire, run ``run(handle)`` while extending the lease, release; skip if held elsewhere.

        A lost lease is logged and reported, but the run is not cancelled: the fencing token
        it carries is what keeps a late write out, which is what the lab demonstrates.
        ``renew=False`` keeps the lease at its first TTL, as redis-py's ``Lock`` does (it has
        no auto-renewal): a negative control for a TTL shorter than the job.
        """
        try:
            handle = await self.acquire_job_lock(job, ttl_ms)
        except RedisError as exc:
            event("lock.unavailable", job=job, reason=exc, level=logging.WARNING)
            return JobLockResult(JobLockStatus.UNAVAILABLE)
        if handle is None:
            return JobLockResult(JobLockStatus.SKIPPED, holder=None)

        lost = asyncio.Event()
        every = extend_every_s if extend_every_s is not None else handle.ttl_ms / 3000
        keeper = asyncio.create_task(self._keep_extended(handle, every, lost)) if renew else None
        try:
            value = await run(handle)
        finally:
            if keeper is not None:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
            if lost.is_set():
                self.held.pop(job, None)
            else:
                try:
                    if not await self.release_job_lock(handle):
                        lost.set()
                except RedisError as exc:
                    # The lease runs out by itself; nothing else can be done without Redis.
                    event("lock.release_failed", job=job, fencing_token=handle.fencing_token,
                          reason=exc, level=logging.WARNING)
        status = JobLockStatus.LOST if lost.is_set() else JobLockStatus.RAN
        return JobLockResult(status, fencing_token=handle.fencing_token, value=value,
                             holder=self.node_id)

    async def _keep_extended(self, handle: LockHandle, every_s: float, lost: asyncio.Event) -> None:
        valid_until = handle.acquired_at + handle.ttl_ms / 1000
        while True:
            await asyncio.sleep(every_s)
            sent = time.monotonic()
            try:
                still_ours = await self.extend(handle)
            except RedisError as exc:
                # Unknown outcome: the lease still counts until its last confirmed expiry.
                if time.monotonic() >= valid_until:
                    event("lock.lost", job=handle.job, fencing_token=handle.fencing_token,
                          reason=f"extend_failed: {exc}", level=logging.WARNING)
                    lost.set()
                    return
                continue
            if not still_ours:
                event("lock.lost", job=handle.job, fencing_token=handle.fencing_token,
                      reason="expired_or_taken", level=logging.WARNING)
                lost.set()
                return
            valid_until = sent + handle.ttl_ms / 1000

    async def release_all(self) -> int:
        """Release every lock this process still holds (at shutdown); how many were released."""
        released = 0
        for handle in list(self.held.values()):
            try:
                released += await self.release_job_lock(handle)
            except RedisError as exc:
                event("lock.release_failed", job=handle.job, reason=exc, level=logging.WARNING)
        return released

    async def _holder(self, job: str) -> str | None:
        try:
            raw = await self.redis.get(LOCK_PREFIX + job)
        except RedisError:
            return None
        if raw is None:
            return None
        raw = raw.decode() if isinstance(raw, bytes) else raw
        return _parse_value(raw)[0]
