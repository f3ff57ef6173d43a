"""Quantiles, one convention for the whole lab: nearest rank, ``q`` in (0, 1]; and the interval
a share measured on n requests stands for.

The nearest-rank ``q`` quantile of n values is the ceil(q * n)-th smallest of them: always a
value that was measured, never one between two (no interpolation). The checks, the load
runner's own figures, the report and ``lab watch`` all read latencies this way, so a run's p99
is the same number wherever it is shown.

k6's own trend percentiles (the ``p(95)`` of its summary and thresholds) interpolate linearly
between ranks instead. The lab never compares its figures with k6's number for number: k6's
thresholds are k6's verdict, read back as k6 states it (``lab.load.results``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of non-empty ``values``: the
    ceil(q * n)-th smallest; ValueError for no values or a ``q`` outside (0, 1]."""
    if not values:
        raise ValueError("a quantile of no values")
    if not 0 < q <= 1:
        raise ValueError(f"quantile {q!r} is not in (0, 1]")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def nearest_rank_or_none(values: Sequence[float], q: float) -> float | None:
    """``nearest_rank``, or None for no values (a figure shown as "-")."""
    return nearest_rank(values, q) if values else None


def wilson_interval(k: int, n: int, confidence: float = 0.999) -> tuple[float, float]:
    """The Wilson score interval of a share of ``k`` in ``n`` (n > 0) at ``confidence``: where
    the share the run sampled lies (Wilson 1927; unlike p +- z*se it stays inside [0, 1] and is
    not empty at k = 0 or k = n)."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"a share of {k} in {n}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # Exactly 0 and 1 at the ends (rounding would leave 1e-17: "more than none").
    low = 0.0 if k == 0 else max(0.0, centre - half)
    return low, 1.0 if k == n else min(1.0, centre + half)
