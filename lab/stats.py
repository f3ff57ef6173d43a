"""Quantiles, one convention for the whole lab: nearest rank, ``q`` in (0, 1].

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
