"""Reading nginx values as NGINX does: time units."""

from __future__ import annotations

import pytest

from lab.errors import ConfigError
from lab.topology.nginx_tree import parse_time_s


@pytest.mark.parametrize(("value", "seconds"), [
    ("500ms", 0.5), ("10s", 10.0), ("10", 10.0), ("1m", 60.0), ("1m30s", 90.0), ("2h", 7200.0),
])
def test_time_units(value: str, seconds: float) -> None:
    """nginx time values convert to seconds."""
    assert parse_time_s(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "ten", "1.5s", "10x", "s", "5 s"])
def test_bad_time_values(value: str) -> None:
    """Malformed time values raise ConfigError."""
    with pytest.raises(ConfigError):
        parse_time_s(value)
