"""The health contract check on synthetic samples."""

from __future__ import annotations

import json

from lab.checks.base import Verdict
from lab.checks.health import check_health_contract
from lab.history import HealthSample, History


def detailed(database: str = "ok", redis: str = "ok") -> str:
    return json.dumps({"status": "x", "checks": {"database": database, "redis": redis, "application": "ok"}})


def history(expectation: str, statuses: dict[str, int], body: str) -> History:
    h = History()
    h.health_samples += [HealthSample(1.0, "backend-1", path, status, body if path == "/health/detailed" else "{}",
                                      expectation) for path, status in statuses.items()]
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
    result = check_health_contract(history("redis-down", {**DOWN, "/health/detailed": 200, "/health/ready": 200},
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
    result = check_health_contract(history("database-down", {**DOWN, "/health/live": 503}, detailed(database="failed")))
    assert result.verdict is Verdict.FAIL


def test_no_samples_is_unknown() -> None:
    """Nothing sampled, nothing judged."""
    assert check_health_contract(History()).verdict is Verdict.UNKNOWN
