"""lab.stats: the one quantile convention (nearest rank, q in (0, 1])."""

from __future__ import annotations

import math

import pytest

from lab.stats import nearest_rank, nearest_rank_or_none


def test_nearest_rank_is_a_measured_value() -> None:
    """The ceil(q * n)-th smallest value, never one interpolated between two."""
    values = [float(i) for i in range(100, 0, -1)]
    assert nearest_rank(values, 0.5) == 50.0
    assert nearest_rank(values, 0.99) == 99.0
    assert nearest_rank(values, 1.0) == 100.0
    assert nearest_rank([3.0], 0.99) == 3.0
    assert nearest_rank([1.0, 2.0], 0.5) == 1.0   # interpolation would say 1.5
    assert nearest_rank([1.0, math.inf], 0.99) == math.inf


def test_nearest_rank_matches_the_load_runners_former_percent_convention() -> None:
    """q = p / 100 gives what the load runner's percentile(values, p) gave (rank ceil(p/100*n))."""
    for n in range(1, 60):
        values = [float(v * 7 % n) for v in range(n)]
        ordered = sorted(values)
        for p in (50, 90, 95, 99):
            rank = max(1, math.ceil(p / 100 * n))
            assert nearest_rank(values, p / 100) == ordered[min(rank, n) - 1]


def test_nearest_rank_refuses_no_values_and_q_outside_0_1() -> None:
    """No values, or q outside (0, 1] (a percent given by mistake), is an error, not a guess."""
    with pytest.raises(ValueError, match="no values"):
        nearest_rank([], 0.5)
    with pytest.raises(ValueError, match="not in"):
        nearest_rank([1.0], 95)
    with pytest.raises(ValueError, match="not in"):
        nearest_rank([1.0], 0)
    assert nearest_rank_or_none([], 0.5) is None
