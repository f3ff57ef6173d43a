"""The connection pool for real: 300 clients through PgBouncer on the default lab, sampled from
PgBouncer's admin console and from PostgreSQL, and one client past max_client_conn."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from lab.checks import Verdict
from lab.checks.pool import check_pool_bound
from lab.expectations import PgBouncerPolicy
from lab.history import PoolSample, PoolStats, ServerActivitySample
from lab.topology.lab import Lab
from lab.topology.pgbouncer_ini import parse_pgbouncer_ini
from lab.workload.pool_load import PoolLoadResult, PoolSampler, max_client_conn_error, run_pool_load

CLIENTS = 300
LOAD_S = 8.0
SETTLE_S = 0.75     # a few sampler intervals after the clients closed


@dataclass(frozen=True)
class PoolRun:
    policy: PgBouncerPolicy
    load: PoolLoadResult
    samples: list[PoolSample]
    activity: list[ServerActivitySample]
    own_connections: int
    before: PoolStats
    after: PoolStats
    sampler_errors: list[str]


def pgbouncer_policy(lab: Lab) -> PgBouncerPolicy:
    """The pool settings of the pgbouncer.ini the running PgBouncer reads."""
    result = lab.exec("pgbouncer", ["cat", "/etc/lab/pgbouncer.ini"])
    assert result.exit_code == 0, result.output
    return parse_pgbouncer_ini(result.output, database=lab.config.postgres.database)


@pytest.fixture(scope="module")
def pool_run(running_lab: Lab) -> PoolRun:
    """One 300-client load on the shared lab, with the sampler running before, during and after."""
    endpoints, pg = running_lab.endpoints, running_lab.config.postgres
    policy = pgbouncer_policy(running_lab)
    sampler = PoolSampler(endpoints.pgbouncer_admin_dsn, endpoints.postgres_dsn, pg.user,
                          pg.database, max_duration_s=60.0)
    sampler.start()
    try:
        before = sampler.stats()
        load = run_pool_load(endpoints.pgbouncer_dsn, clients=CLIENTS, duration_s=LOAD_S)
        time.sleep(SETTLE_S)
        after = sampler.stats()
    finally:
        sampler.stop()
    return PoolRun(policy, load, sampler.samples, sampler.activity, sampler.own_connections,
                   before, after, sampler.errors)


def test_server_connections_stay_within_pool_size(pool_run: PoolRun) -> None:
    """Under 300 clients PgBouncer fills its pool of 30 server connections and never exceeds it."""
    assert pool_run.load.clients == CLIENTS and pool_run.load.errors == 0, pool_run.load
    assert pool_run.samples and not pool_run.sampler_errors, pool_run.sampler_errors
    assert pool_run.policy.server_bound == 30
    peak = max(s.sv_total for s in pool_run.samples)
    assert peak == pool_run.policy.server_bound, f"peak {peak} server connections"


def test_clients_queue_then_drain(pool_run: PoolRun) -> None:
    """Clients wait for a server connection during the load and none is waiting at the end."""
    assert max(s.cl_waiting for s in pool_run.samples) > 0
    assert max(s.maxwait_s for s in pool_run.samples) > 0
    last = pool_run.samples[-1]
    assert last.cl_waiting == 0 and last.maxwait_s == 0, last


def test_postgres_counts_the_same_connections(pool_run: PoolRun) -> None:
    """PostgreSQL's pg_stat_activity sees PgBouncer's server connections plus the sampler's own."""
    assert pool_run.own_connections == 1
    peak_pg = max(a.connections for a in pool_run.activity)
    assert pool_run.policy.server_bound <= peak_pg <= pool_run.policy.server_bound + 1 + 1
    result = check_pool_bound(pool_run.samples, pool_run.activity, 30, 0, None, None, 0,
                              own_connections=pool_run.own_connections)
    assert dict(result.values)["pg_disagreements"] == 0, result.details


def test_check_pool_bound_passes_on_the_default_lab(pool_run: PoolRun) -> None:
    """check_pool_bound passes with the sizes and mode the running pgbouncer.ini sets."""
    policy = pool_run.policy
    result = check_pool_bound(pool_run.samples, pool_run.activity, policy.default_pool_size,
                              policy.reserve_pool_size, pool_run.before, pool_run.after,
                              pool_run.load.errors, own_connections=pool_run.own_connections,
                              pool_mode=policy.pool_mode)
    assert result.verdict is Verdict.PASS, (result.measured, result.details)
    values = dict(result.values)
    # Transaction pooling reuses each server connection for many transactions.
    assert values["transactions"] >= pool_run.load.transactions
    assert values["reuse_ratio"] > 10


def test_extra_client_is_refused_with_max_client_conn(running_lab: Lab) -> None:
    """The client past max_client_conn gets PgBouncer's 'no more connections allowed' refusal."""
    policy = pgbouncer_policy(running_lab)
    text = max_client_conn_error(running_lab.endpoints.pgbouncer_dsn, policy.max_client_conn)
    assert "no more connections allowed (max_client_conn)" in text, text
