"""Durations as people read them, one formatter for the whole lab.

Two precisions of the same rule (below one second in milliseconds, else in seconds):

- a configured value, exactly as written (``text_seconds(5)`` is "5 s", 0.005 is "5 ms",
  31536000 is "365 d"): thresholds, timeouts, what lint and the predictions quote;
- a measured value to a fixed precision (``text_seconds(1.2345, decimals=2)`` is "1.23 s",
  0.0123 is "12.3 ms"): the watch's latencies, the report's.
"""

from __future__ import annotations

DAY_S = 86400


def text_seconds(seconds: float | None, decimals: int | None = None) -> str:
    """A duration as people read it: "-" for None; under 1 s in ms, else in s. Without
    ``decimals`` exact (5 ms, 1.45 s, whole days in d: 365 d); with it, a measurement: ms to
    0.1 ms and seconds to ``decimals`` places (12.3 ms, 1.23 s)."""
    if seconds is None:
        return "-"
    if decimals is not None:
        return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.{decimals}f} s"
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    if seconds >= DAY_S and seconds % DAY_S == 0:
        return f"{seconds / DAY_S:g} d"
    return f"{seconds:g} s"
