"""Lock-store views on synthetic histories: one holder per sample,
and a holder across a Redis restart."""

from __future__ import annotations

import dataclasses

import pytest
from test_checks_locks import IV, JOB, TICK0, fault, run, steady

from lab.checks.base import Verdict
from lab.checks.locks_store import (
    check_lock_after_eviction,
    check_lock_after_store_restart,
    check_lock_holders,
)
from lab.history import FaultPhase, History, LockSample

pytestmark = pytest.mark.covers("check:lock-after-store-restart", "check:lock-holders",
                                "check:lock-after-eviction")


def sampled(history: History, *, holder_of=None, every: float = 0.25) -> History:
    """Lock samples every ``every`` s over the observation; Redis names ``holder_of(t)``
    (default: the node whose run of JOB is in progress, else nobody)."""

    def running(at: float) -> str | None:
        return next((r.node for r in history.job_runs if r.job == JOB and r.started_at <= at
                     and (r.finished_at is None or at <= r.finished_at)), None)

    start, end = history.mark_at("start"), history.mark_at("end")
    assert start is not None and end is not None
    at = start
    while at < end:
        holder = (holder_of or running)(at + 0.005)
        history.lock_samples.append(LockSample(at, at + 0.01, JOB, holder, None))
        at += every
    return history


def test_one_holder_at_every_sample_passes() -> None:
    """Redis names each running node while it runs: one holder, no unlocked run."""
    result = check_lock_holders(sampled(steady()), jobs=(JOB,))
    assert result.verdict is Verdict.PASS, result
    assert dict(result.values)["samples"] > 100


def test_runs_without_a_lock_in_redis_fail() -> None:
    """Backends without locks: Redis names nobody while the job runs (the locking-off control)."""
    result = check_lock_holders(sampled(steady(), holder_of=lambda at: None), jobs=(JOB,))
    assert result.verdict is Verdict.FAIL
    assert dict(result.values)["unlocked_run_samples"] > 0
    assert "Redis named no holder while running: backend-" in result.details[0]


def test_another_holder_while_a_run_goes_on_fails_once_per_episode() -> None:
    """A run outlasting its lease: Redis names the next holder while the first still runs."""
    history = steady(ticks=10, skip=(5, 6))
    history.job_runs.append(run(900, 5, "backend-1", duration=3.0))    # tick 5, runs past tick 6
    history.job_runs.append(run(901, 6, "backend-2", duration=0.5))    # lease expired: tick 6 runs
    result = check_lock_holders(sampled(history, holder_of=lambda at: "backend-2"
                                        if (TICK0 + 6) * IV <= at <= (TICK0 + 6) * IV + 0.51
                                        else None),
                                jobs=(JOB,))
    assert result.verdict is Verdict.FAIL
    assert dict(result.values)["two_holder_samples"] >= 1
    assert any("Redis named backend-2 while running: backend-1 (run 900" in d
               for d in result.details)


def test_no_samples_is_unknown() -> None:
    """Without samples nothing was observed."""
    assert check_lock_holders(steady(), jobs=(JOB,)).verdict is Verdict.UNKNOWN


def restarted(*, second: bool, token_rises: bool = True) -> History:
    """Redis restarted 0.2 s into backend-1's 3.5 s run of tick 5; back 0.8 s later."""
    history = steady(ticks=12, skip=(5, 6, 7))
    history.faults += [fault("restart", "redis", FaultPhase.INJECT, 5 * IV + 0.3),
                       fault("restart", "redis", FaultPhase.HEAL, 5 * IV + 1.0)]
    history.job_runs.append(run(900, 5, "backend-1", token=2_000, duration=3.5))
    if second:
        history.job_runs.append(run(901, 6, "backend-2", token=3_000 if token_rises else 5,
                                    duration=3.5))
    return history


def after_restart(history: History, *, persistence: bool = False):
    return check_lock_after_store_restart(history, persistence=persistence, job_interval_s=IV,
                                          jobs=(JOB,))


def test_second_run_after_a_restart_without_persistence_passes() -> None:
    """Without persistence the lock is lost and tick 6 starts a second run, with a higher token."""
    result = after_restart(restarted(second=True))
    assert result.verdict is Verdict.PASS, result
    assert "second run by backend-2" in result.details[0]
    assert dict(result.values)["overlap_s"] > 1.0


def test_no_second_run_where_none_is_predicted_fails() -> None:
    """A Redis that kept the lock (persistence on) judged as if without persistence fails."""
    result = after_restart(restarted(second=False))
    assert result.verdict is Verdict.FAIL
    assert "no second run" in result.details[0]


def test_persistence_predicts_no_second_run() -> None:
    """With persistence on, a second run is the failure."""
    assert after_restart(restarted(second=False), persistence=True).verdict is Verdict.PASS
    assert after_restart(restarted(second=True), persistence=True).verdict is Verdict.FAIL


def test_a_token_that_went_back_fails() -> None:
    """A second holder with a lower fencing token would let the stale holder's write win."""
    result = after_restart(restarted(second=True, token_rises=False))
    assert result.verdict is Verdict.FAIL
    assert "NOT above" in result.details[0]


def test_a_restart_between_runs_is_unknown() -> None:
    """A restart that hit no run in progress says nothing about a held lock."""
    history = steady(ticks=12)
    history.faults += [fault("restart", "redis", FaultPhase.INJECT, 5 * IV + 1.0),
                       fault("restart", "redis", FaultPhase.HEAL, 5 * IV + 1.5)]
    assert after_restart(history).verdict is Verdict.UNKNOWN


def evicted(*, keys: tuple[str, ...], second: bool, token_rises: bool = True) -> History:
    """``keys`` evicted from Redis 0.3 s into backend-1's 3.5 s run of tick 5 (Redis serves on)."""
    history = steady(ticks=12, skip=(5, 6, 7))
    inject = fault("evict", "redis", FaultPhase.INJECT, 5 * IV + 0.3)
    history.faults += [dataclasses.replace(inject, lost_keys=keys),
                       fault("evict", "redis", FaultPhase.HEAL, 5 * IV + 0.31)]
    history.job_runs.append(run(900, 5, "backend-1", token=2_000, duration=3.5))
    if second:
        history.job_runs.append(run(901, 6, "backend-2", token=3_000 if token_rises else 5,
                                    duration=3.5))
    return history


def after_eviction(history: History, **kwargs):
    return check_lock_after_eviction(history, job_interval_s=IV, jobs=(JOB,), **kwargs)


OWN_KEY = f"lab:lock:{JOB}"


def test_an_evicted_lock_lets_the_next_tick_start_a_second_run() -> None:
    result = after_eviction(evicted(keys=(OWN_KEY,), second=True))
    assert result.verdict is Verdict.PASS, result
    assert "its lock lost" in result.details[0] and "second run by backend-2" in result.details[0]


def test_no_second_run_after_the_lock_was_evicted_fails() -> None:
    result = after_eviction(evicted(keys=(OWN_KEY,), second=False))
    assert result.verdict is Verdict.FAIL, result
    assert "no second run" in result.details[0]


def test_a_lock_the_eviction_did_not_take_predicts_no_second_run() -> None:
    """Other keys evicted: the holder keeps its lock, and a second run is the failure."""
    assert after_eviction(evicted(keys=("lab:lock:other",), second=False)).verdict \
        is Verdict.PASS
    result = after_eviction(evicted(keys=("lab:lock:other",), second=True))
    assert result.verdict is Verdict.FAIL and "its lock kept" in result.details[0]


def test_a_second_holder_with_a_lower_token_fails() -> None:
    result = after_eviction(evicted(keys=(OWN_KEY,), second=True, token_rises=False))
    assert result.verdict is Verdict.FAIL and "NOT above" in result.details[0]


def test_a_contract_key_is_matched_and_no_key_or_no_locking_is_unknown() -> None:
    history = evicted(keys=(f"job-lock:{JOB}",), second=True)
    assert after_eviction(history, lock_key="job-lock:{job}").verdict is Verdict.PASS
    assert after_eviction(history, lock_key="").verdict is Verdict.UNKNOWN
    assert after_eviction(history, locking=False).verdict is Verdict.UNKNOWN
    assert after_eviction(steady()).verdict is Verdict.UNKNOWN
