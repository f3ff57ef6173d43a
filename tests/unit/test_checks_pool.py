"""The pool bound check (its pgbouncer.ini reader: test_pgbouncer_ini.py)."""

from __future__ import annotations

import pytest

from lab.checks.base import Verdict
from lab.checks.pool import (
    PoolLoadPhase,
    PoolSample,
    PoolStats,
    ServerActivitySample,
    check_pool_bound,
)
from lab.config import LabConfig
from lab.topology.pgbouncer_ini import parse_pgbouncer_ini
from lab.topology.render import render_pgbouncer_ini

pytestmark = pytest.mark.covers("check:pool-bound")

T0 = 1_700_000_000.0
POLICY = parse_pgbouncer_ini(render_pgbouncer_ini(LabConfig()), database="app")
BOUND_ARGS = (POLICY.default_pool_size, POLICY.reserve_pool_size)


def pool(at: float, servers: int, *, waiting: int = 0, maxwait_s: float = 0.0,
         database: str = "app", mode: str = "transaction") -> PoolSample:
    """A SHOW POOLS row with ``servers`` server connections, most of them active."""
    active = servers * 2 // 3
    return PoolSample(at=T0 + at, cl_active=40, cl_waiting=waiting, sv_active=active,
                      sv_idle=servers - active, sv_used=0, sv_tested=0, sv_login=0,
                      maxwait_s=maxwait_s, database=database, user="app", pool_mode=mode)


def ramp(peak: int, *, seconds: int = 10) -> list[PoolSample]:
    """One reading per second rising to ``peak`` server connections, waiters drained at the end."""
    return [pool(t, min(peak, 5 + t * 5), waiting=3 if 2 <= t < seconds - 2 else 0)
            for t in range(seconds)]


def pg_for(samples: list[PoolSample], extra: int = 1) -> list[ServerActivitySample]:
    """pg_stat_activity counts half a second after each reading, plus the sampler's own."""
    return [ServerActivitySample(s.at + 0.5, s.sv_total + extra) for s in samples]


STATS = (PoolStats(T0, 1_000, 3_000), PoolStats(T0 + 10, 9_400, 28_000))


def check(samples: list[PoolSample], pg: list[ServerActivitySample] | None = None, *,
          errors: int = 0, **kwargs: object):
    """check_pool_bound with the rendered configuration's sizes."""
    return check_pool_bound(samples, pg_for(samples) if pg is None else pg, *BOUND_ARGS, *STATS,
                            errors, **kwargs)  # type: ignore[arg-type]


# --- the check ---------------------------------------------------------------------------


def test_within_bound_passes_with_reuse_ratio() -> None:
    """A saturated pool that stays at its bound, agrees with PostgreSQL and drains passes."""
    samples = ramp(POLICY.server_bound)
    result = check(samples, pool_mode="transaction")
    assert result.verdict is Verdict.PASS, result
    values = dict(result.values)
    assert values["peak_server_connections"] == POLICY.server_bound
    assert values["transactions"] == 8_400
    assert values["reuse_ratio"] == pytest.approx(8_400 / POLICY.server_bound)
    assert "8400 transactions over at most 30 server connections = 280.0" in result.measured


def test_pool_of_300_fails_the_bound() -> None:
    """A PgBouncer opening 45 server connections fails the configured bound of 30 and shows when."""
    result = check(ramp(45))
    assert result.verdict is Verdict.FAIL
    assert any("over the bound of 30" in d for d in result.details)
    assert any(d.startswith("  +8.00 s app/app: 45 server connections") for d in result.details)


def test_postgres_disagreeing_fails() -> None:
    """PostgreSQL counting far more connections than PgBouncer admits fails."""
    samples = ramp(30)
    pg = [ServerActivitySample(s.at + 0.5, s.sv_total + 12) for s in samples]
    result = check(samples, pg)
    assert result.verdict is Verdict.FAIL
    assert any("PostgreSQL and PgBouncer disagree" in d for d in result.details)
    assert any("more than 1 pool(s) x 30 + 1 own + 1 closing = 32" in d for d in result.details)


def test_own_connection_and_one_change_are_tolerated() -> None:
    """The sampler's own connection and one connection opening meanwhile are within tolerance."""
    samples = ramp(30)
    assert check(samples, pg_for(samples, extra=2)).verdict is Verdict.PASS
    assert check(samples, pg_for(samples, extra=3)).verdict is Verdict.FAIL
    assert check(samples, pg_for(samples, extra=0), own_connections=0).verdict is Verdict.PASS


def test_waiting_clients_must_drain() -> None:
    """Clients still waiting at the last reading fail."""
    samples = [*ramp(30)[:-1], pool(9, 30, waiting=4, maxwait_s=2.5)]
    result = check(samples)
    assert result.verdict is Verdict.FAIL
    assert any("4 client(s), oldest 2.500 s" in d for d in result.details)


def test_client_errors_fail() -> None:
    """Any client error fails the check."""
    result = check(ramp(30), errors=3)
    assert result.verdict is Verdict.FAIL
    assert "3 client error(s)" in result.details


def test_session_mode_fails_when_transaction_configured() -> None:
    """SHOW POOLS reporting session mode fails a configuration asking for transaction pooling."""
    samples = [pool(t, 20, mode="session") for t in range(5)]
    result = check(samples, pool_mode="transaction")
    assert result.verdict is Verdict.FAIL
    assert any("runs pool_mode session" in d for d in result.details)


def test_admin_pool_is_ignored() -> None:
    """The admin console's pseudo-pool neither counts against the bound nor with PostgreSQL."""
    samples = ramp(30)
    admin = [pool(t, 99, database="pgbouncer") for t in range(10)]
    assert check(samples + admin, pg_for(samples)).verdict is Verdict.PASS


def test_unexercised_pool_is_unknown() -> None:
    """A pool that never filled (and nobody waited) has not shown its bound: unknown, with the
    reason; a pool that filled, or made clients wait, is judged."""
    samples = [pool(t, 6) for t in range(5)]
    result = check(samples)
    assert result.verdict is Verdict.UNKNOWN
    assert any("bound was not exercised" in d for d in result.details)
    assert check(ramp(30)).verdict is Verdict.PASS


def test_missing_evidence_is_unknown() -> None:
    """No pool samples, no PostgreSQL samples, or counters going backwards: unknown."""
    assert check([]).verdict is Verdict.UNKNOWN
    assert check(ramp(30), []).verdict is Verdict.UNKNOWN
    backwards = check_pool_bound(ramp(30), pg_for(ramp(30)), *BOUND_ARGS, STATS[1], STATS[0], 0)
    assert backwards.verdict is Verdict.UNKNOWN


def test_each_load_is_reported_and_the_bound_judged_over_both() -> None:
    """Two loads, the backends' within the bound and the direct one over it: each gets its own
    figures, and the bound fails on the direct load's samples."""
    backends = [pool(t, 30, waiting=0) for t in range(5)]
    direct = [pool(t, 45 if t == 12 else 30, waiting=200 if t < 13 else 0) for t in range(10, 14)]
    phases = (PoolLoadPhase("backends", T0, T0 + 4, 90, 7_800, 2, PoolStats(T0, 0, 0),
                            PoolStats(T0 + 4, 6_000, 9_000), (("200", 7_798), ("503", 2))),
              PoolLoadPhase("direct", T0 + 10, T0 + 13, 300, 9_000, 0,
                            PoolStats(T0 + 10, 6_000, 9_000), PoolStats(T0 + 13, 15_000, 18_000)))
    result = check(backends + direct, errors=2, phases=phases)
    assert result.verdict is Verdict.FAIL
    values = dict(result.values)
    assert values["backends_peak_server_connections"] == 30
    assert values["backends_peak_pgbouncer_clients"] == 40     # cl_active 40, nobody waiting
    assert values["backends_transactions_per_s"] == 1_500
    assert values["backends_status_503"] == 2
    assert values["direct_peak_server_connections"] == 45
    assert values["direct_peak_cl_waiting"] == 200
    assert any(d.startswith("backends load: 90 clients for 4.0 s, 7800 HTTP answers (200 x7798, "
                            "503 x2), 2 error(s); peak 30 server connections")
               for d in result.details), result.details
    assert any(d.startswith("direct load: 300 clients for 3.0 s, 9000 transactions")
               for d in result.details)
    assert "2 client error(s)" in result.details
