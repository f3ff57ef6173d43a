"""lab.units.text_seconds: the one duration formatter, exact or to a measured precision."""

from __future__ import annotations

from lab.units import text_seconds


def test_configured_values_read_exactly_as_written() -> None:
    """Without decimals: ms under a second, seconds as given, whole days in d."""
    assert text_seconds(0.005) == "5 ms"
    assert text_seconds(1.45) == "1.45 s"
    assert text_seconds(30) == "30 s"
    assert text_seconds(86400 * 365) == "365 d"
    assert text_seconds(86401) == "86401 s"


def test_measured_values_to_a_fixed_precision() -> None:
    """With decimals: ms to 0.1 ms under a second, seconds to that many places; None is "-"."""
    assert text_seconds(0.0123, decimals=2) == "12.3 ms"
    assert text_seconds(1.2345, decimals=2) == "1.23 s"
    assert text_seconds(1.2345, decimals=3) == "1.234 s"
    assert text_seconds(None) == "-"
