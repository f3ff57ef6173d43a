"""The orchestrator's start rules against compose's stages, without Docker."""

from __future__ import annotations

from lab.config import LabConfig
from lab.topology.plan import (
    GATED,
    PROBE_AFTER,
    READY_BEFORE_NEXT_STAGE,
    STAGES,
    START_AFTER,
    node_roles,
)


def _stage(role: str) -> int:
    return next(i for i, stage in enumerate(STAGES) if role in stage)


def test_every_dependency_points_at_a_known_role_and_event() -> None:
    """Each rule names roles the topology has and the events the lab records."""
    roles = set(node_roles(LabConfig()).values())
    for rules in (START_AFTER, GATED, PROBE_AFTER):
        for role, needs in rules.items():
            assert role in roles
            assert all(other in roles and event in ("started", "ready") for other, event in needs)


def test_start_rules_never_run_a_process_before_compose_would() -> None:
    """What compose starts in a later stage, the lab starts (or lets go) only after what that
    stage waits for: PostgreSQL ready before PgBouncer runs, backends running before NGINX."""
    for role, needs in {**START_AFTER, **GATED}.items():
        for other, _event in needs:
            assert _stage(other) < _stage(role), (role, other)
    waited = {role for needs in GATED.values() for role, event in needs if event == "ready"}
    waited |= {role for needs in START_AFTER.values() for role, event in needs if event == "ready"}
    assert set(READY_BEFORE_NEXT_STAGE) <= waited
    assert GATED["pgbouncer"] == (("postgres", "ready"),)
    assert ("backend", "started") in START_AFTER["nginx"]


def test_nginx_is_probed_only_after_every_backend_answered() -> None:
    """NGINX's passive checks would eject backends that do not answer yet (README, start order)."""
    assert ("backend", "ready") in PROBE_AFTER["nginx"]
    assert ("postgres", "ready") in PROBE_AFTER["pgbouncer"]
