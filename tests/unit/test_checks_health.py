"""The health contract and transition checks on synthetic samples."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, replace

import pytest

from lab.checks.base import Verdict
from lab.checks.health import (
    check_detailed_follows_dependency,
    check_health_contract,
    check_ready_at_startup,
    check_ready_while_draining,
)
from lab.faults import FAULTS
from lab.history import WATCHED, FaultEvent, FaultPhase, HealthSample, HealthWatch, History

pytestmark = pytest.mark.covers("check:health-contract", "check:health-startup",
                                "check:health-drain", "check:health-detailed-timing")


def detailed(database: str = "ok", redis: str = "ok") -> str:
    return json.dumps({"status": "x", "checks": {"database": database, "redis": redis,
                                                 "application": "ok"}})


def history(expectation: str, statuses: dict[str, int], body: str) -> History:
    h = History()
    h.health_samples += [HealthSample(1.0, "backend-1", path, status,
                                      body if path == "/health/detailed" else "{}", expectation)
                         for path, status in statuses.items()]
    return h


HEALTHY = {"/health": 200, "/health/live": 200, "/health/ready": 200, "/health/detailed": 200}
DOWN = {"/health": 200, "/health/live": 200, "/health/ready": 503, "/health/detailed": 503}


def test_contract_kept_passes() -> None:
    """Answers as documented in every state pass."""
    h = history("healthy", HEALTHY, detailed())
    h.health_samples += history("redis-down", DOWN, detailed(redis="failed")).health_samples
    h.health_samples += history("database-down", DOWN, detailed(database="failed")).health_samples
    assert check_health_contract(h).verdict is Verdict.PASS


def test_detailed_that_ignores_redis_fails() -> None:
    """A detailed check that answers 200 while Redis is down fails and names the endpoint."""
    result = check_health_contract(history("redis-down",
                                           {**DOWN, "/health/detailed": 200, "/health/ready": 200},
                                           detailed()))
    assert result.verdict is Verdict.FAIL
    assert any("/health/detailed (redis-down): 200 where 503" in d for d in result.details)


def test_wrong_dependency_named_fails() -> None:
    """A 503 that blames the database while Redis is down fails."""
    result = check_health_contract(history("redis-down", DOWN, detailed(database="failed")))
    assert result.verdict is Verdict.FAIL
    assert any("marks database failed, expected redis" in d for d in result.details)


def test_liveness_depending_on_a_dependency_fails() -> None:
    """/health/live answering 503 while the database is down breaks the contract."""
    result = check_health_contract(history("database-down", {**DOWN, "/health/live": 503},
                                           detailed(database="failed")))
    assert result.verdict is Verdict.FAIL


def test_no_samples_is_unknown() -> None:
    """Nothing sampled, nothing judged."""
    assert check_health_contract(History()).verdict is Verdict.UNKNOWN


# -- transitions, on a simulated backend sampled the way the health watcher samples it ------

T0 = 1_700_000_000.0
INTERVAL = 0.05


@dataclass(frozen=True)
class SimBackend:
    """What a simulated backend answers when (seconds after T0): SIGTERM at ``sigterm``, ready
    503 for ``drain`` while still answering, gone until ``listen``, ready 503 for ``startup``;
    Redis away over ``redis_down``, noticed after ``notice`` s (the dependency timeout when
    frozen); ``gates`` False: readiness ignores startup and draining."""

    sigterm: float = 10.0
    drain: float = 1.0
    listen: float = 12.5
    startup: float = 0.3
    redis_down: tuple[float, float] = (3.0, 6.0)
    notice: float = 1.0
    gates: bool = True
    blind: bool = False

    def answer(self, path: str, t: float) -> tuple[int | None, float, str]:
        """(status or None, seconds to answer, body) of a request sent at ``t``."""
        if self.sigterm + self.drain <= t < self.listen:
            return None, 0.001, "ConnectionRefusedError: [Errno 111] Connection refused"
        if path in ("/health", "/health/live"):
            return 200, 0.002, "{}"
        draining = self.sigterm <= t < self.sigterm + self.drain
        starting = self.listen <= t < self.listen + self.startup
        if self.gates and (draining or starting):
            return 503, 0.002, json.dumps({"status": "draining" if draining else "starting"})
        down_from, down_to = self.redis_down
        if not self.blind and down_from <= t < down_to:
            # A request waits out the timeout, or until Redis is back, whichever comes first.
            wait = min(self.notice, down_to - t) if t + self.notice > down_from else self.notice
            return 503, wait, detailed(redis="failed")
        return 200, 0.002, detailed()


def watched(sim: SimBackend, end: float = 15.0, drain_event: bool = True) -> History:
    """The history a watcher on backend-2 records for ``sim``, with the runner's fault events."""
    h = History()
    for path in ("/health", "/health/live", "/health/ready", "/health/detailed"):
        t = 0.0
        while t < end:
            status, latency, body = sim.answer(path, t)
            h.health_samples.append(HealthSample(T0 + t + latency, "backend-2", path, status, body,
                                                 WATCHED, sent_at=T0 + t))
            t = max(t + (INTERVAL if status is not None else 0.01), t + latency)
    h.health_watches.append(HealthWatch("backend-2", INTERVAL, T0, T0 + end, len(h.health_samples)))
    down_from, down_to = sim.redis_down
    frozen, stopped = FAULTS.get("freeze").effect, FAULTS.get("stop").effect
    h.faults += [FaultEvent("freeze", "redis", FaultPhase.INJECT, T0 + down_from,
                            T0 + down_from - 0.01, effect=frozen),
                 FaultEvent("freeze", "redis", FaultPhase.HEAL, T0 + down_to, T0 + down_to - 0.01,
                            effect=frozen)]
    h.mark("ready:redis", T0 + down_to + 0.05)
    if drain_event:
        h.faults += [FaultEvent("stop", "backend-2", FaultPhase.INJECT,
                                T0 + sim.sigterm + sim.drain + 0.1, T0 + sim.sigterm,
                                effect=stopped),
                     FaultEvent("stop", "backend-2", FaultPhase.HEAL, T0 + sim.listen - 0.5,
                                T0 + sim.listen - 1, effect=stopped)]
    return h


def test_a_backend_that_keeps_the_lifecycle_passes_every_transition() -> None:
    """Ready 503 while draining and starting, detailed following a frozen Redis: all three pass."""
    h = watched(SimBackend())
    for result in (check_ready_at_startup(h), check_ready_while_draining(h, drain_s=1.0),
                   check_detailed_follows_dependency(h, dependency_timeout_s=1.0)):
        assert result.verdict is Verdict.PASS, result


def test_readiness_without_gates_fails_startup_and_drain() -> None:
    """Ready 200 as soon as the process listens and while it drains fails
    both, naming what was seen."""
    h = watched(SimBackend(gates=False))
    startup, drain = check_ready_at_startup(h), check_ready_while_draining(h, drain_s=1.0)
    assert (startup.verdict is Verdict.FAIL
            and "first /health/ready answer was 200, expected 503" in startup.measured)
    assert (drain.verdict is Verdict.FAIL
            and "no /health/ready 503 before the process was gone" in drain.measured)


def test_a_drain_shorter_than_claimed_fails() -> None:
    """A 0.2 s drain judged against a claimed 1 s one answers for too short a time."""
    drain = check_ready_while_draining(watched(SimBackend(drain=0.2)), drain_s=1.0)
    assert drain.verdict is Verdict.FAIL
    assert "expected at least 0.950 s" in drain.measured, drain.measured


def test_liveness_that_stops_while_draining_fails() -> None:
    """/health/live refused during the drain (ready still 503) fails the drain check."""
    h = watched(SimBackend())
    h.health_samples = [replace(s, status=503)
                        if s.path == "/health/live" and T0 + 10 <= s.at < T0 + 11 else s
                        for s in h.health_samples]
    drain = check_ready_while_draining(h, drain_s=1.0)
    assert drain.verdict is Verdict.FAIL and "/health/live while draining" in drain.measured


def test_a_dependency_timeout_longer_than_claimed_fails_the_detailed_bound() -> None:
    """A backend that waits 2 s for a frozen Redis, judged against a claimed 1 s, turns 503
    too late."""
    timing = check_detailed_follows_dependency(watched(SimBackend(notice=2.0)),
                                               dependency_timeout_s=1.0)
    assert timing.verdict is Verdict.FAIL
    assert "expected within 1.050 s" in timing.measured, timing.measured
    assert "bound = pause + dependency_timeout + answer = 0.048 + 1 + 0.002 = 1.050 s" in \
        timing.derivation


def test_detailed_blind_to_redis_fails_the_detailed_bound() -> None:
    """A detailed check that never asks Redis never turns 503."""
    timing = check_detailed_follows_dependency(watched(SimBackend(blind=True)),
                                               dependency_timeout_s=1.0)
    assert timing.verdict is Verdict.FAIL and "never 503 naming redis" in timing.measured


def test_transitions_without_a_watch_or_an_event_are_unknown() -> None:
    """No watch, or a watch with no restart in it, decides nothing."""
    assert check_ready_at_startup(History()).verdict is Verdict.UNKNOWN
    assert check_detailed_follows_dependency(History(),
                                             dependency_timeout_s=1.0).verdict is Verdict.UNKNOWN
    quiet = watched(SimBackend(), drain_event=False)
    assert check_ready_while_draining(quiet, drain_s=1.0).verdict is Verdict.UNKNOWN
    assert check_ready_at_startup(quiet).verdict is Verdict.UNKNOWN


def test_a_watch_that_ends_before_the_restart_is_unknown() -> None:
    """A watch that never saw the backend answer again cannot judge its startup."""
    h = watched(SimBackend(), end=12.0)
    assert check_ready_at_startup(h).verdict is Verdict.UNKNOWN


def test_health_contract_objective() -> None:
    """The documented answers meet the checklist's contract; a detailed 200 during an outage, or
    a 503 that does not name the dependency, misses it; healthy answers alone are unknown."""
    from test_objective_judges import judged

    kept = history("healthy", HEALTHY, detailed())
    down = history("redis-down", DOWN, detailed(redis="failed")).health_samples
    # /health/ready names what failed too (its body carries the same checks).
    kept.health_samples += [dataclasses.replace(s, body=detailed(redis="failed"))
                            if s.path == "/health/ready" else s for s in down]
    _, objectives = judged("health-contract", kept)
    assert objectives["health_contract"].verdict is Verdict.PASS, objectives
    blind = history("redis-down", {**DOWN, "/health/detailed": 200}, detailed())
    _, objectives = judged("health-contract", blind)
    assert objectives["health_contract"].verdict is Verdict.FAIL
    assert "2 of 4 answers off the contract" in objectives["health_contract"].measured
    unnamed = history("database-down", DOWN, '{"status": "unhealthy"}')
    _, objectives = judged("health-contract", unnamed)
    assert "without naming database" in objectives["health_contract"].measured
    _, objectives = judged("health-contract", history("healthy", HEALTHY, detailed()))
    assert objectives["health_contract"].verdict is Verdict.UNKNOWN
