"""Job records from a black-box backend: its log lines and its Redis lock keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.config import load_config
from lab.history import LockSample
from lab.workload.job_sources import (
    parse_job_log,
    pattern_reader,
    runs_from_events,
    runs_from_samples,
)

CONTRACT = load_config(Path(__file__).resolve().parents[2] / "examples" / "checklist" /
                       "lab.toml").backend.contract
assert CONTRACT is not None

DAY = "2026-12-01T23:47:"
LOG = "".join(f"{DAY}{docker}Z [{DAY}{own}Z] {text}\n" for docker, own, text in (
    ("26.006100000", "26.005779", "Acquired lock for job: recurring-messages"),
    ("26.016000000", "26.015833", "Job lock held by another server: phone-linking-recovery"),
    ("26.520000000", "26.519739", "Released lock for job: recurring-messages"),
    ("28.006000000", "28.005000", "Acquired lock for job: phone-linking-recovery"))) + \
    f"{DAY}28.100000000Z something else\n"


def test_log_lines_become_runs() -> None:
    """acquired opens a run, the same node's released ends it; one never released is unfinished."""
    events = parse_job_log(LOG, "backend-2", CONTRACT)
    assert [e.kind for e in events] == ["acquired", "skipped", "released", "acquired"]
    assert events[0].at == pytest.approx(1796168846.005779)    # the line's own time
    runs = runs_from_events(events, 2.0)
    assert [(r.job, r.node, r.outcome) for r in runs] == [
        ("recurring-messages", "backend-2", "ok"),
        ("phone-linking-recovery", "backend-2", "running")]
    assert runs[0].finished_at - runs[0].started_at == pytest.approx(0.51396, abs=1e-5)
    assert runs[0].tick == int(runs[0].started_at // 2.0)
    assert runs[1].finished_at is None


def test_docker_time_without_a_time_group() -> None:
    """Without (?P<at>...) a line's time is Docker's stamp of it."""
    contract = CONTRACT.model_copy(update={"logs": CONTRACT.logs.model_copy(update={
        "acquired": r"Acquired lock for job: (?P<job>[\w-]+)"})})
    (event, *_) = parse_job_log(LOG, "backend-1", contract)
    assert event.at == pytest.approx(1796168846.0061)


def test_lock_values_by_pattern() -> None:
    """The contract's key and holder patterns read Redis's lock values."""

    class FakeRedis:
        def mget(self, keys: list[str]) -> list[bytes | None]:
            assert keys == ["job-lock:recurring-messages", "job-lock:phone-linking-recovery"]
            return [b"backend-3:a1b2c3", None]

    read = pattern_reader(CONTRACT)
    assert read(FakeRedis(), CONTRACT.jobs) == {"recurring-messages": ("backend-3", None)}


def test_runs_from_lock_samples() -> None:
    """Stretches of samples naming one holder are one run each."""
    samples = [LockSample(t, t + 0.001, "recurring-messages", holder, None)
               for t, holder in ((10.0, None), (10.1, "backend-1"), (10.2, "backend-1"),
                                 (10.3, None), (12.1, "backend-2"), (12.2, None))]
    runs = runs_from_samples(samples, 2.0)
    assert [(r.node, r.started_at, r.finished_at, r.tick) for r in runs] == [
        ("backend-1", 10.1, pytest.approx(10.201), 5),
        ("backend-2", 12.1, pytest.approx(12.101), 6)]
