"""Every check and objective shown failing on a synthetic history of a broken system, through
the negative-control gate (tests/conftest.py): the unit half of what tests/unit/test_registry.py
audits. Each case judges through the check registry, as the runner does, and hands its results
to the gate; a case whose broken system conforms to its own configuration shows the objective
failing instead (the checklist's target, not the configuration, is what it misses)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from nginx_sim import failover
from test_checks_dependency import outage
from test_checks_distribution import _judged as distribution_judged
from test_checks_distribution import spread
from test_checks_exposure import healthy, judge, with_bindings
from test_checks_health import DOWN, SimBackend, detailed, watched
from test_checks_health import history as health_history
from test_checks_lock_views import after_eviction, after_restart, evicted, restarted, sampled
from test_checks_locks import IV, JOB, frozen_holder, killed_holder, redis_outage, run, steady
from test_checks_pool import check as pool_check
from test_checks_pool import ramp
from test_objective_judges import (
    KILL,
    LOCKS,
    T0,
    _health,
    _pool,
    _writes,
    expectations,
    judged,
    tightened,
)
from test_rate_limit_model import nginx_log, rule, simultaneous

from lab.checks.distribution import share_band
from lab.checks.health import (
    check_detailed_follows_dependency,
    check_ready_at_startup,
    check_ready_while_draining,
)
from lab.checks.locks_store import check_jobs_paused_while_redis_down, check_lock_holders
from lab.checks.registry import Observation
from lab.config import LabConfig
from lab.history import HeaderSample, History, PortBinding
from lab.load.results import judge_records
from lab.topology.expect import claimed
from lab.verdict import Verdict

HOST = "https://127.0.0.1:1"


def _exclusivity() -> list[Any]:
    twice = steady()
    twice.job_runs.append(run(999, 3, "backend-3", at=0.3))
    # And a job no backend ever took: its judged ticks fail, never "unknown".
    nobody = steady()
    nobody.job_runs.clear()
    nobody.mark("start", T0)
    nobody.mark("end", T0 + 20 * IV)
    never = judged("lock-exclusivity", nobody, **LOCKS)[0]
    assert never.verdict is Verdict.FAIL and "no backend ever took" in never.measured, never
    return [judged("lock-exclusivity", twice, **LOCKS)[0], never]


def _takeover() -> list[Any]:
    expect = claimed(LabConfig().with_overrides("backend", job_interval_s=IV))
    return [judged("lock-takeover", killed_holder(next_at_tick=10), {"target": "backend-1"},
                   expect=expect, objectives=tightened(lock_takeover=1), **LOCKS)[0]]


def _fencing() -> list[Any]:
    unfenced = claimed(LabConfig().with_overrides("backend", fencing=False))
    return [judged("fencing", frozen_holder(fenced=False), expect=unfenced, **LOCKS)[0]]


def _security() -> list[Any]:
    # A site that adds no X-Frame-Options and no CSP conforms to itself: only the objective
    # (the checklist's list) fails it.
    bare = claimed(LabConfig().with_overrides("nginx", security_headers=False))
    answers = [HeaderSample(f"{HOST}/x", status, (("X-RateLimit-Status", "REJECTED"),
                                                  ("Retry-After", "1")) if status == 429 else ())
               for status in (200, 404, 429, 502)]
    result, _ = judged("security-headers", History(header_samples=answers), expect=bare)
    assert result.verdict is not Verdict.FAIL   # conformance: the headers it adds, it sends
    return [result]


def _rate_headers() -> list[Any]:
    rejected = [HeaderSample(f"{HOST}/api/auth/login", 429, (("Content-Type", "x"),))]
    return [judged("rate-limit-headers", History(header_samples=rejected))[0]]


def _tls() -> list[Any]:
    short = HeaderSample(f"{HOST}/health", 200, (("Strict-Transport-Security", "max-age=300"),))
    return [judged("tls", History(header_samples=[short]))[0]]


def _rate_limit() -> list[Any]:
    loose = History(access_log=nginx_log(rule(burst=10), simultaneous(12)))
    return [judged("rate-limit", loose, {"location": "/api/auth/"},
                   expect=claimed(LabConfig()))[0]]


def _health_contract() -> list[Any]:
    blind = health_history("redis-down", {**DOWN, "/health/detailed": 200}, detailed())
    return [judged("health-contract", blind)[0]]


def _health_transitions() -> list[Any]:
    ungated = watched(SimBackend(gates=False))
    return [check_ready_at_startup(ungated), check_ready_while_draining(ungated, drain_s=1.0),
            check_detailed_follows_dependency(watched(SimBackend(blind=True)),
                                              dependency_timeout_s=1.0)]


def _pool_bound() -> list[Any]:
    return [judged("pool-bound", _pool(96, errors=100))[0], pool_check(ramp(45))]


def _distribution() -> list[Any]:
    weighted = {"backend-1": 4, "backend-2": 1, "backend-3": 1}
    sixth = share_band(weighted, 1).required // 6 + 1
    result, _ = distribution_judged(spread(4 * sixth, sixth, sixth), weighted)
    assert result.verdict is Verdict.PASS    # conforms to its weights; fails evenness
    return [result]


def _exposure() -> list[Any]:
    return [judge(with_bindings(healthy(), "backend-2", PortBinding("8000/tcp", "127.0.0.1",
                                                                    49001)))]


def _durability() -> list[Any]:
    history, stored = _writes(2)
    return [judged("durability", history, observations={Observation.STORED_WRITES: stored})[0]]


def _latency() -> list[Any]:
    return [judged("latency", _health(0.008))[0],
            judged("latency", failover(), objectives=tightened(failing_latency=0.5),
                   **KILL)[0],
            # An NGINX whose connect timeout is a quarter longer than its configuration's.
            judged("latency", failover(connect_timeout_s=1.25), **KILL)[0]]


def _load(gate: Any) -> list[Any]:
    slow = judge_records([dataclasses.replace(r, latency_s=0.5, client="default")
                          for r in failover().requests], 0.2, 0.001)
    assert not all(t.passed for t in slow)
    gate.observe_objective("load_p95", Verdict.FAIL if not slow[0].passed else Verdict.PASS)
    return []


CASES: dict[str, tuple[tuple[str, ...], Callable[..., list[Any]]]] = {
    # Conformance: an NGINX one step off its configuration; objectives: a configuration that
    # never ejects, or a tighter target.
    "ejection": (("check:ejection", "objective:ejection"), lambda: [judged(
        "ejection", failover(max_fails=0), {"target": "backend-2"},
        expect=expectations(max_fails=0), **KILL)[0], judged(
        "ejection", failover(max_fails=4), {"target": "backend-2"}, **KILL)[0]]),
    "readmission": (("check:readmission", "objective:readmission"), lambda: [judged(
        "readmission", failover(heal_at=8.0), {"target": "backend-2"},
        objectives=tightened(readmission=0.1), **KILL)[0], judged(
        "readmission", failover(heal_at=8.0, fail_timeout_s=6), {"target": "backend-2"},
        **KILL)[0]]),
    "routing": (("check:routing",), lambda: [judged(
        "routing", failover(max_fails=4), {}, **KILL)[0]]),
    "availability": (("check:availability", "objective:availability"), lambda: [judged(
        "availability", failover(next_upstream=("http_502",)), **KILL)[0]]),
    "durability": (("check:durability", "objective:lost_writes"), _durability),
    "latency": (("check:latency", "objective:health_latency", "objective:failing_latency"),
                _latency),
    "exclusivity": (("check:lock-exclusivity", "objective:duplicate_job_runs"), _exclusivity),
    "fencing": (("check:fencing", "objective:duplicate_job_runs"), _fencing),
    "takeover": (("check:lock-takeover", "objective:lock_takeover"), _takeover),
    "paused": (("check:jobs-paused",), lambda: [
        check_jobs_paused_while_redis_down(redis_outage(steady()), IV)]),
    "holders": (("check:lock-holders",), lambda: [
        check_lock_holders(sampled(steady(), holder_of=lambda at: None), jobs=(JOB,))]),
    "store-restart": (("check:lock-after-store-restart",), lambda: [
        after_restart(restarted(second=False))]),
    "eviction": (("check:lock-after-eviction",), lambda: [
        after_eviction(evicted(keys=(f"lab:lock:{JOB}",), second=False))]),
    "pool": (("check:pool-bound", "objective:pool_server_connections",
              "objective:pool_clients"), _pool_bound),
    "rate-limit": (("check:rate-limit", "objective:rate_limits"), _rate_limit),
    "rate-limit-headers": (("check:rate-limit-headers", "objective:rate_limit_headers"),
                           _rate_headers),
    "tls": (("check:tls", "objective:hsts_max_age"), _tls),
    "security-headers": (("check:security-headers", "objective:security_headers"), _security),
    "exposure": (("check:exposure",), _exposure),
    "health-contract": (("check:health-contract", "objective:health_contract"),
                        _health_contract),
    "health-transitions": (("check:health-startup", "check:health-drain",
                            "check:health-detailed-timing"), _health_transitions),
    "fail-fast": (("check:fail-fast", "objective:fail_fast"), lambda: [judged(
        "fail-fast", outage(None), {"client": "reads"})[0]]),
    "recovery": (("check:recovery", "objective:dependency_recovery"), lambda: [judged(
        "recovery", outage(0.02), {"client": "reads", "within": "5"},
        objectives=tightened(dependency_recovery=0.5))[0]]),
    "distribution": (("check:distribution", "objective:even_distribution"), _distribution),
    "load": (("objective:load_p95",), _load),
}


@pytest.mark.parametrize("case", [pytest.param(name, marks=pytest.mark.covers(*names), id=name)
                                  for name, (names, _) in CASES.items()])
def test_a_broken_system_fails(case: str, negative_control: Any) -> None:
    """The case's broken system fails each check and objective it covers."""
    names, build = CASES[case]
    results = build(negative_control) if case == "load" else build()
    negative_control.observe(results)
    missing = sorted(set(names) - negative_control.failed)
    assert not missing, (missing, results)
