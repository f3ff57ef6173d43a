"""The lock service (lab_backend.locks) against the lab's real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time

import pytest
from lab_backend.locks import FENCE_PREFIX, JobLockStatus, LockService
from redis.asyncio import Redis

from .conftest import run

pytestmark = pytest.mark.docker


def _client(url: str) -> Redis:
    return Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


async def _two_services(url: str) -> tuple[Redis, LockService, LockService]:
    redis = _client(url)
    return redis, LockService(redis, "node-a"), LockService(redis, "node-b")


def test_second_holder_is_refused_while_first_holds(lock_redis_url, job_name):
    """While node-a holds a job lock, node-b cannot acquire it."""

    async def scenario():
        redis, a, b = await _two_services(lock_redis_url)
        try:
            first = await a.acquire_job_lock(job_name, 5000)
            second = await b.acquire_job_lock(job_name, 5000)
            held = await b.is_job_lock_held(job_name)
            return first, second, held
        finally:
            await redis.aclose()

    first, second, held = run(scenario())
    assert first is not None and first.node == "node-a"
    assert second is None
    assert held is True


def test_lock_expires_after_ttl_and_old_holder_cannot_release(lock_redis_url, job_name):
    """After the TTL a new holder acquires; the old holder's release is refused."""

    async def scenario():
        redis, a, b = await _two_services(lock_redis_url)
        try:
            old = await a.acquire_job_lock(job_name, 200)
            await asyncio.sleep(0.4)
            new = await b.acquire_job_lock(job_name, 5000)
            released = await a.release_job_lock(old)
            still_held = await redis.get(f"lab:lock:{job_name}")
            return new, released, still_held
        finally:
            await redis.aclose()

    new, released, still_held = run(scenario())
    assert new is not None and new.node == "node-b"
    assert released is False
    assert still_held.decode() == new.value


def test_extend_keeps_the_lock_past_its_original_ttl(lock_redis_url, job_name):
    """Extending the lease keeps the holder past the first TTL; others still cannot acquire."""

    async def scenario():
        redis, a, b = await _two_services(lock_redis_url)
        try:
            handle = await a.acquire_job_lock(job_name, 300)
            extended = await a.extend(handle, 2000)
            await asyncio.sleep(0.5)
            intruder = await b.acquire_job_lock(job_name, 1000)
            ttl = await redis.pttl(f"lab:lock:{job_name}")
            return extended, intruder, ttl
        finally:
            await redis.aclose()

    extended, intruder, ttl = run(scenario())
    assert extended is True and intruder is None
    assert 0 < ttl <= 1600


def test_non_holder_cannot_release_or_extend(lock_redis_url, job_name):
    """A handle with another node's value neither deletes nor extends the lock."""

    async def scenario():
        redis, a, b = await _two_services(lock_redis_url)
        try:
            handle = await a.acquire_job_lock(job_name, 5000)
            forged = dataclasses.replace(handle, node="node-b", value="node-b|forged|1")
            released = await b.release_job_lock(forged)
            extended = await b.extend(forged, 60_000)
            value = await redis.get(f"lab:lock:{job_name}")
            ttl = await redis.pttl(f"lab:lock:{job_name}")
            return handle, released, extended, value, ttl
        finally:
            await redis.aclose()

    handle, released, extended, value, ttl = run(scenario())
    assert released is False and extended is False
    assert value.decode() == handle.value
    assert ttl <= 5000


def test_fencing_tokens_strictly_increase_across_holders_and_counter_loss(lock_redis_url, job_name):
    """Successive acquisitions get increasing tokens, even after the counter key is lost."""

    async def scenario():
        redis, a, b = await _two_services(lock_redis_url)
        tokens = []
        try:
            for index in range(6):
                service = (a, b)[index % 2]
                handle = await service.acquire_job_lock(job_name, 5000)
                tokens.append(handle.fencing_token)
                await service.release_job_lock(handle)
                if index == 3:
                    # What a Redis restart without persistence does to the counter.
                    await redis.delete(FENCE_PREFIX + job_name)
            return tokens
        finally:
            await redis.aclose()

    tokens = run(scenario())
    assert all(later > earlier for earlier, later in itertools.pairwise(tokens))


def test_with_job_lock_skips_when_another_node_holds_it(lock_redis_url, job_name):
    """with_job_lock returns "skipped" and never runs the job while another node holds it."""
    calls = []

    async def scenario():
        redis, a, b = await _two_services(lock_redis_url)
        try:
            await a.acquire_job_lock(job_name, 5000)

            async def job(handle):
                calls.append(handle)

            return await b.with_job_lock(job_name, 5000, job)
        finally:
            await redis.aclose()

    result = run(scenario())
    assert result.status == "skipped"
    assert calls == []


def test_with_job_lock_extends_while_running_then_releases(lock_redis_url, job_name):
    """A job running three TTLs long keeps its lock throughout and releases it at the end."""

    async def scenario():
        redis, a, b = await _two_services(lock_redis_url)
        intruders = []
        try:
            async def job(handle):
                for _ in range(6):
                    await asyncio.sleep(0.15)
                    intruders.append(await b.acquire_job_lock(job_name, 1000))
                return handle.fencing_token

            result = await a.with_job_lock(job_name, 300, job, extend_every_s=0.08)
            held_after = await a.is_job_lock_held(job_name)
            return result, intruders, held_after
        finally:
            await redis.aclose()

    result, intruders, held_after = run(scenario())
    assert result.status is JobLockStatus.RAN and result.value == result.fencing_token
    assert intruders == [None] * 6
    assert held_after is False


def test_with_job_lock_reports_a_lost_lease_and_leaves_the_new_holder_alone(lock_redis_url,
                                                                             job_name):
    """When the lease is taken over mid-run, the run is reported lost and not released."""

    async def scenario():
        redis, a, b = await _two_services(lock_redis_url)
        try:
            taken = {}

            async def job(handle):
                await b.force_release_job_lock(job_name)
                taken["handle"] = await b.acquire_job_lock(job_name, 5000)
                await asyncio.sleep(0.3)

            result = await a.with_job_lock(job_name, 2000, job, extend_every_s=0.1)
            value = await redis.get(f"lab:lock:{job_name}")
            return result, taken["handle"], value
        finally:
            await redis.aclose()

    result, newer, value = run(scenario())
    assert result.status is JobLockStatus.LOST
    assert newer.fencing_token > result.fencing_token
    assert value.decode() == newer.value


def test_active_locks_list_holder_token_and_ttl(lock_redis_url, job_name):
    """get_active_job_locks shows the holder node, fencing token and remaining TTL."""

    async def scenario():
        redis, a, _ = await _two_services(lock_redis_url)
        try:
            handle = await a.acquire_job_lock(job_name, 5000)
            return handle, await a.get_active_job_locks()
        finally:
            await redis.aclose()

    handle, active = run(scenario())
    mine = [lock for lock in active if lock.job == job_name]
    assert len(mine) == 1
    assert mine[0].holder == "node-a" and mine[0].fencing_token == handle.fencing_token
    assert 0 < mine[0].ttl_ms <= 5000


def test_unreachable_redis_means_the_job_does_not_run():
    """With Redis unreachable, with_job_lock reports "unavailable" and never runs the job."""
    calls = []

    async def scenario():
        # Port 1 on loopback: connection refused at once, nothing leaves the host.
        redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
        try:
            service = LockService(redis, "node-a")

            async def job(handle):
                calls.append(handle)

            return await service.with_job_lock("any-job", 1000, job)
        finally:
            await redis.aclose()

    assert run(scenario()).status is JobLockStatus.UNAVAILABLE
    assert calls == []


def test_a_lease_without_renewal_expires_under_a_longer_run(lock_redis_url, job_name):
    """renew=False keeps the first TTL: a 0.3 s lease lapses under a 0.8 s run,
    and another node takes it."""

    async def scenario():
        redis, a, b = await _two_services(lock_redis_url)
        taken = []
        try:
            async def job(handle):
                await asyncio.sleep(0.5)
                taken.append(await b.acquire_job_lock(job_name, 5000))
                await asyncio.sleep(0.3)

            return await a.with_job_lock(job_name, 300, job, renew=False), taken
        finally:
            await redis.aclose()

    result, taken = run(scenario())
    assert taken[0] is not None and taken[0].node == "node-b"
    assert taken[0].fencing_token > result.fencing_token
    assert result.status is JobLockStatus.LOST


def test_the_lab_reads_locks_as_the_backend_writes_them(lock_redis_url, job_name):
    """lab.workload.jobs.read_locks (and the lock sampler) parse the backend's lock
    values: holder and token."""
    from lab.workload.jobs import LockSampler, read_locks, redis_client

    async def acquire():
        redis, a, _ = await _two_services(lock_redis_url)
        try:
            return await a.acquire_job_lock(job_name, 5000)
        finally:
            await redis.aclose()

    handle = run(acquire())
    with redis_client(lock_redis_url) as client:
        assert read_locks(client, (job_name, "no-such-job")) == {
            job_name: ("node-a", handle.fencing_token)}
    with LockSampler(lock_redis_url, (job_name,), interval_s=0.05, max_samples=3) as sampler:
        for _ in range(100):
            if len(sampler.samples) == 3:
                break
            time.sleep(0.02)
    assert ([(s.holder, s.fencing_token) for s in sampler.samples]
            == [("node-a", handle.fencing_token)] * 3)
    assert all(s.sent_at <= s.received_at for s in sampler.samples)
