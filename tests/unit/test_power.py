"""The failover checks' power on the simulator: the honest configuration passes every seeded
run, and every one-step change a scenario's fault can reveal is caught (docs/power.md has the
rates over 200 runs; this is a fixed handful of seeds, so it is deterministic)."""

from __future__ import annotations

from pathlib import Path

import pytest
from power_cases import SHAPES, detected, trial

pytestmark = pytest.mark.covers("check:ejection", "check:readmission", "check:availability",
                                "check:latency")

SEEDS = range(10)
CASES = [(shape.name, change) for shape in SHAPES for change in shape.changes]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_the_configuration_itself_passes_every_run(shape) -> None:
    """The honest baseline: an NGINX running its configuration is never failed."""
    failing = {seed: detected(trial(shape, None, seed)) for seed in SEEDS}
    assert not any(failing.values()), failing


@pytest.mark.parametrize(("name", "change"), CASES)
def test_a_one_step_change_is_caught(name: str, change: str) -> None:
    """An NGINX one step off its configuration fails in at least 9 of the 10 seeds."""
    shape = next(s for s in SHAPES if s.name == name)
    caught = sum(bool(detected(trial(shape, change, seed))) for seed in SEEDS)
    assert caught >= 9, f"{name}, {change}: caught in {caught} of {len(SEEDS)}"


def test_the_documented_table_covers_every_case() -> None:
    """docs/power.md lists a row for every scenario and change judged here."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "power.md").read_text()
    for name, change in CASES:
        assert f"| {name} | {change} |" in text, (name, change)
