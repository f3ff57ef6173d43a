"""The rate-limit check's power, shown: one-step changes of a zone are detected on the
scenario's traffic, the unchanged zone always passes, and docs/power-rate-limit.md says so."""

from __future__ import annotations

import pytest
from rate_limit_power import DOC, Row, render, table

pytestmark = pytest.mark.covers("check:rate-limit")


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    """The whole table, recomputed with its fixed seeds."""
    return table()


def test_the_unchanged_zone_passes_every_run(rows: list[Row]) -> None:
    """A simulated NGINX running the configured zone passes every seed on every shape and
    machine: the clock alternatives cover what NGINX's clocks do."""
    baseline = [r for r in rows if r.change == "unchanged"]
    assert baseline and all(r.hits == r.runs for r in baseline), \
        [r for r in baseline if r.hits != r.runs]


def test_one_step_changes_are_detected(rows: list[Row]) -> None:
    """Burst +-1 and rate +-10 % fail the check in at least 95 % of the runs, except where
    the change is no change of behaviour or the shape does not probe it (each named)."""
    blind = [r for r in rows if r.change != "unchanged" and not r.enough]
    named = [r for r in blind if r.note]
    before = [r for r in blind if not r.note]
    assert all(r.hits == 0 for r in named), named
    # Only the webhook stream the scenario sent alone before it was strengthened.
    assert all(r.shape.endswith("(before)") and r.change.startswith("rate") for r in before), \
        before
    scenario = [r for r in rows if r.change != "unchanged" and not r.note
                and not r.shape.endswith("(before)")]
    assert scenario and all(r.enough for r in scenario)


def test_the_document_is_the_table(rows: list[Row]) -> None:
    """docs/power-rate-limit.md is what `python tests/unit/rate_limit_power.py` writes."""
    assert DOC.read_text() == render(rows), \
        "docs/power-rate-limit.md is stale: run `python tests/unit/rate_limit_power.py`"
