"""Shipped scenarios cut short for CI, written beside the test (no Docker)."""

from __future__ import annotations

from pathlib import Path

import yaml

from lab.scenarios.loader import resolve


def failover_first_round(folder: Path) -> Path:
    """failover up to its first re-admission and the second after it: one kill, one ejection,
    one re-admission. The crash loop's second round waits out the same timers again."""
    failover = yaml.safe_load(resolve("failover").read_text())
    served = next(i for i, step in enumerate(failover["steps"]) if "wait_until_served" in step)
    once = folder / "failover-once.yaml"
    once.write_text(yaml.safe_dump({**failover, "name": "failover-once",
                                    "steps": failover["steps"][:served + 2]}))
    return once
