"""The before/after comparison's arithmetic, on synthetic runs (no Docker)."""

from __future__ import annotations

from pathlib import Path

from lab.history import History, Outcome, RequestRecord
from lab.load.compare import compare
from lab.load.placement import Target
from lab.load.profiles import build_plan
from lab.load.results import LoadVerdict
from lab.load.runner import LoadResult
from lab.load.thresholds import LoadThresholds
from lab.verdict import Verdict


def run(step: int, slow_after_s: int, seconds: int = 6) -> LoadResult:
    """A breakpoint-like ramp: ``step * (s + 1)`` answers in second s, fast until
    ``slow_after_s``, then 0.5 s each."""
    plan = build_plan("breakpoint", {"start": 10, "peak": 100, "duration_s": seconds},
                      LoadThresholds())
    history = History()
    for second in range(seconds):
        rate = step * (second + 1)
        for i in range(rate):
            sent = 1000.0 + second + i / rate
            latency = 0.005 if second < slow_after_s else 0.5
            history.requests.append(RequestRecord(len(history.requests), "main", "GET", "/health",
                                                  sent, sent, latency, 200, "backend-1",
                                                  Outcome.OK))
    return LoadResult("breakpoint", "x", Path("."), 1000.0, 1000.0 + seconds,
                      LoadVerdict(Verdict.FAIL, "t"), 99, "v1.1.0", "network", Target(), plan,
                      plan.thresholds, (), history, (), (), {}, 2, 1000.0)


def test_ratio_of_sustained_rates_and_latency_at_equal_load() -> None:
    """Throughput at the objectives is the best window before the break; the ratio divides."""
    result = compare(run(25, 4), run(50, 5))            # before breaks at 100/s, after at 250/s
    assert result.before.throughput == 100 and result.after.throughput == 250
    assert result.ratio == 2.5
    assert "within the claimed 1.5-3x" in result.verdict_line()
    assert result.equal_load == 80                          # 80% of the lower: 75 and 100/s fit
    assert result.before_at_equal.p95_s == 0.005 and result.after_at_equal.p95_s is None
    same = compare(run(25, 4), run(25, 4))
    assert same.ratio == 1.0 and "below" in same.verdict_line()


def test_an_unbroken_side_is_a_lower_bound() -> None:
    """A side that met every bound at the peak gives only a lower bound; the line says so."""
    result = compare(run(25, 4), run(50, 99))
    assert "the after side never missed a bound" in result.verdict_line()
