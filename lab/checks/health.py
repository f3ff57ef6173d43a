"""The health-endpoint contract: what each backend's four endpoints answer in each lab state.

Samples are taken per backend, directly (``docker exec lab-probe``): through NGINX a 503 is
retried and counted as a failure of the backend that gave it, which is itself a finding.
"""

from __future__ import annotations

import json
from collections import Counter

from lab.checks.base import CheckResult, Verdict, never_crashes
from lab.history import HealthSample, History

NAME = "health-contract"
PATHS = ("/health", "/health/live", "/health/ready", "/health/detailed")
# What each endpoint answers in each state (the backend's documented contract): /health and
# /health/live never ask a dependency; ready and detailed answer 503 when one is down.
CONTRACT: dict[str, dict[str, int]] = {
    "healthy": {"/health": 200, "/health/live": 200, "/health/ready": 200, "/health/detailed": 200},
    "redis-down": {"/health": 200, "/health/live": 200, "/health/ready": 503, "/health/detailed": 503},
    "database-down": {"/health": 200, "/health/live": 200, "/health/ready": 503, "/health/detailed": 503},
}
# The dependency /health/detailed must name as failed in each state (and only it).
FAILED = {"healthy": (), "redis-down": ("redis",), "database-down": ("database",)}


def _detailed_problem(sample: HealthSample) -> str | None:
    """What is wrong with a /health/detailed body for its state, if anything."""
    try:
        checks = json.loads(sample.body).get("checks", {})
    except (ValueError, AttributeError):
        return f"body is not the documented JSON: {sample.body[:80]!r}"
    failed = tuple(sorted(name for name, state in checks.items() if state == "failed"))
    expected = FAILED[sample.expectation]
    if failed != tuple(sorted(expected)):
        return (f"checks marks {', '.join(failed) or 'nothing'} failed, expected "
                f"{', '.join(expected) or 'nothing'}")
    return None


@never_crashes(NAME)
def check_health_contract(history: History) -> CheckResult:
    """Whether every sampled health answer matches the contract for the state it was taken in."""
    samples = [s for s in history.health_samples if s.expectation in CONTRACT]
    expected = ("/health and /health/live 200 always; /health/ready and /health/detailed 200 when "
                "healthy, 503 with the failed dependency named when Redis or the database is down")
    derivation = "the backend's documented contract (images/backend/README.md), per state sampled"
    if not samples:
        return CheckResult(NAME, Verdict.UNKNOWN, "no health sample", expected, derivation)
    problems = []
    for sample in samples:
        want = CONTRACT[sample.expectation][sample.path]
        where = f"{sample.node} {sample.path} ({sample.expectation})"
        if sample.status != want:
            problems.append(f"{where}: {sample.status} where {want} was expected: {sample.body[:100]}")
        elif sample.path == "/health/detailed" and (problem := _detailed_problem(sample)):
            problems.append(f"{where}: {problem}")
    states = Counter(s.expectation for s in samples)
    nodes = {s.node for s in samples}
    measured = (f"{len(samples)} answers from {len(nodes)} backend(s) in states "
                f"{', '.join(f'{k} x{v}' for k, v in sorted(states.items()))}; {len(problems)} off contract")
    values = (("samples", float(len(samples))), ("problems", float(len(problems))))
    return CheckResult(NAME, Verdict.FAIL if problems else Verdict.PASS, measured, expected, derivation,
                       tuple(problems[:20]), values)
