"""The connection pool: PgBouncer never holds more server connections than it may, and drains.

PgBouncer's own view (``SHOW POOLS``, docs/semantics.md §3): a pool's server connections are
``sv_active + sv_idle + sv_used + sv_tested + sv_login`` and must stay within
``default_pool_size + reserve_pool_size``. PostgreSQL's view (``pg_stat_activity``, counted
by the sampler) must agree, so a pooler that lies about its pool, or a backend that bypasses
it, is caught too. Clients waiting for a server connection (``cl_waiting``) must be gone by
the end of the run, and no client may have seen an error.

The reuse ratio, transactions per server connection, is reported, not judged: it is what
transaction pooling buys (``SHOW STATS`` totals count from PgBouncer's start, so only the
difference between two readings means anything).

The expected sizes come from the expectations record: PgBouncer's own ``SHOW CONFIG`` on the
running pooler, or a claimed configuration (docs/semantics.md §3).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence

from lab.checks.base import (
    CheckResult,
    ObjectiveResult,
    Prediction,
    Verdict,
    combine,
)
from lab.checks.registry import (
    CheckContext,
    CheckDef,
    NoParams,
    ObjectiveHook,
    measured_objective,
    register,
)
from lab.expectations import PgBouncerPolicy
from lab.history import PoolLoadPhase, PoolSample, PoolStats, ServerActivitySample
from lab.objectives import Objectives, threshold_text

__all__ = [
    "PgBouncerPolicy",
    "PoolLoadPhase",
    "PoolSample",
    "PoolStats",
    "ServerActivitySample",
    "check_pool_bound",
]

NAME = "pool-bound"
ADMIN_DATABASE = "pgbouncer"        # the admin console's pseudo-pool: no server connections
# One server connection may open or close between reading SHOW POOLS and pg_stat_activity.
CHANGE_SLACK = 1
_SHOWN = 10

# --- the check -----------------------------------------------------------------------------


def _bracket(times: Sequence[float], totals: Sequence[int], at: float) -> tuple[int, int]:
    """The server totals of the SHOW POOLS readings just before and after ``at``."""
    i = bisect.bisect_left(times, at)
    around = [totals[j] for j in (i - 1, i) if 0 <= j < len(totals)]
    if i < len(times) and times[i] == at:
        around = [totals[i]]
    return min(around), max(around)


def check_pool_bound(samples: Sequence[PoolSample], pg_samples: Sequence[ServerActivitySample],
                     default_pool_size: int, reserve_pool_size: int,
                     stats_before: PoolStats | None, stats_after: PoolStats | None,
                     client_errors: int, *, own_connections: int = 1,
                     pool_mode: str | None = None,
                     phases: Sequence[PoolLoadPhase] = ()) -> CheckResult:
    """Whether every pool stayed within its bound, PostgreSQL agreed, waiters drained, no
    client erred.

    ``own_connections``: connections the sampler holds that ``pg_stat_activity`` counts but
    PgBouncer does not (its direct PostgreSQL session, when it logs in as the app's user).
    ``pool_mode``: the mode the configuration asks for, compared with what SHOW POOLS reports.
    ``phases``: the loads that ran (direct, through the backends), each reported on its own:
    peak server connections, PgBouncer's clients, transactions/s, HTTP statuses. The bound
    is judged over every sample whatever the phase; ``client_errors`` counts all phases.
    """
    bound = default_pool_size + reserve_pool_size
    expected = (f"each pool <= {bound} server connections, pg_stat_activity within "
                f"{own_connections} (+{CHANGE_SLACK}) of PgBouncer's count, no client waiting at "
                "the end, no client error" + (f", pool_mode {pool_mode}" if pool_mode else ""))
    derivation = (f"default_pool_size {default_pool_size} + reserve_pool_size {reserve_pool_size} "
                  f"= {bound} (PgBouncer's configuration); server connections = sv_active + "
                  "sv_idle + sv_used + sv_tested + sv_login (docs/semantics.md §3); the sampler's "
                  f"own {own_connections} connection(s) show in pg_stat_activity only, and one may "
                  "open or close between the two readings")
    pools: dict[tuple[str, str], list[PoolSample]] = defaultdict(list)
    for sample in samples:
        if sample.database != ADMIN_DATABASE:
            pools[(sample.database, sample.user)].append(sample)
    if not pools:
        return CheckResult(NAME, Verdict.UNKNOWN, "no SHOW POOLS sample of an app pool", expected,
                           derivation)
    for readings in pools.values():
        readings.sort(key=lambda s: s.at)
    t0 = min(s.at for readings in pools.values() for s in readings)

    verdicts: list[Verdict] = []
    details: list[str] = []
    values: list[tuple[str, float]] = [("bound", float(bound))]

    # 1. The bound, per pool.
    over = [s for readings in pools.values() for s in readings if s.sv_total > bound]
    peak_pool = max(s.sv_total for readings in pools.values() for s in readings)
    values.append(("peak_server_connections", float(peak_pool)))
    peak_waiting = max(s.cl_waiting for readings in pools.values() for s in readings)
    peak_wait_s = max(s.maxwait_s for readings in pools.values() for s in readings)
    values += [("peak_cl_waiting", float(peak_waiting)), ("peak_maxwait_s", peak_wait_s)]
    # The bound is shown only by a pool pushed against it: full, or with clients queueing.
    exercised = peak_pool >= bound or peak_waiting > 0
    values.append(("exercised", float(exercised)))
    if over:
        verdicts.append(Verdict.FAIL)
        details.append(f"over the bound of {bound} in {len(over)} sample(s):")
        details += [f"  +{s.at - t0:.2f} s {s.database}/{s.user}: {s.sv_total} server connections "
                    f"(active {s.sv_active}, idle {s.sv_idle}, used {s.sv_used}, tested "
                    f"{s.sv_tested}, login {s.sv_login})" for s in over[:_SHOWN]]
    elif not exercised:
        verdicts.append(Verdict.UNKNOWN)
        details.append(f"the pool never filled (peak {peak_pool} of {bound}, nobody waited): the "
                       "bound was not exercised")
    else:
        verdicts.append(Verdict.PASS)

    # 2. PostgreSQL's count against PgBouncer's, at each pg_stat_activity reading.
    per_instant: dict[float, int] = defaultdict(int)
    for readings in pools.values():
        for s in readings:
            per_instant[s.at] += s.sv_total
    times = sorted(per_instant)
    totals = [per_instant[t] for t in times]
    if not pg_samples:
        verdicts.append(Verdict.UNKNOWN)
        details.append("no pg_stat_activity sample: PostgreSQL's side was not compared")
    else:
        disagreements: list[str] = []
        worst = 0
        for pg in sorted(pg_samples, key=lambda p: p.at):
            lo, hi = _bracket(times, totals, pg.at)
            low, high = lo - CHANGE_SLACK, hi + own_connections + CHANGE_SLACK
            if not low <= pg.connections <= high:
                off = pg.connections - high if pg.connections > high else low - pg.connections
                worst = max(worst, off)
                disagreements.append(f"  +{pg.at - t0:.2f} s pg_stat_activity {pg.connections}, "
                                     f"PgBouncer {lo}..{hi} (allowed {low}..{high})")
        pg_peak = max(p.connections for p in pg_samples)
        pg_bound = bound * len(pools) + own_connections + CHANGE_SLACK
        values += [("peak_pg_connections", float(pg_peak)), ("pg_disagreements",
                                                               float(len(disagreements)))]
        if pg_peak > pg_bound:
            details.append(f"PostgreSQL saw {pg_peak} connections, more than {len(pools)} pool(s) "
                           f"x {bound} + {own_connections} own + {CHANGE_SLACK} closing = "
                           f"{pg_bound}")
        if disagreements:
            details.append(f"PostgreSQL and PgBouncer disagree in {len(disagreements)} "
                           f"reading(s) (worst by {worst}):")
            details += disagreements[:_SHOWN]
        verdicts.append(Verdict.FAIL if disagreements or pg_peak > pg_bound else Verdict.PASS)

    # 3. Waiting clients drained by the end.
    stuck = [readings[-1] for readings in pools.values()
             if readings[-1].cl_waiting or readings[-1].maxwait_s > 0]
    if stuck:
        verdicts.append(Verdict.FAIL)
        details += [f"still waiting at the last sample (+{s.at - t0:.2f} s) in {s.database}/"
                    f"{s.user}: {s.cl_waiting} client(s), oldest {s.maxwait_s:.3f} s"
                    for s in stuck]
    last_waiting = sum(readings[-1].cl_waiting for readings in pools.values())
    values.append(("final_cl_waiting", float(last_waiting)))

    # 4. Client errors and the pool mode.
    values.append(("client_errors", float(client_errors)))
    if client_errors:
        verdicts.append(Verdict.FAIL)
        details.append(f"{client_errors} client error(s)")
    if pool_mode is not None:
        modes = {s.pool_mode for readings in pools.values() for s in readings if s.pool_mode}
        wrong = sorted(modes - {pool_mode})
        if wrong:
            verdicts.append(Verdict.FAIL)
            details.append(f"PgBouncer runs pool_mode {', '.join(wrong)}; the configuration says "
                           f"{pool_mode}")

    # 5. Reuse: transactions per server connection (reported, not judged).
    reuse = ""
    if stats_before is not None and stats_after is not None:
        xacts = stats_after.total_xact_count - stats_before.total_xact_count
        queries = stats_after.total_query_count - stats_before.total_query_count
        if xacts < 0 or queries < 0:
            verdicts.append(Verdict.UNKNOWN)
            details.append("SHOW STATS totals went backwards: PgBouncer restarted between readings")
        else:
            values += [("transactions", float(xacts)), ("queries", float(queries))]
            peak_total = max(totals)
            if peak_total:
                ratio = xacts / peak_total
                values.append(("reuse_ratio", ratio))
                reuse = (f"; {xacts} transactions over at most {peak_total} server connections "
                         f"= {ratio:.1f} per connection")
    # 6. Each load on its own (reported, not judged beyond the above).
    for phase in phases:
        details.append(_phase_line(phase, [s for readings in pools.values() for s in readings
                                           if phase.started_at <= s.at <= phase.ended_at], values))

    measured = (f"peak {peak_pool} server connections per pool (bound {bound}), peak "
                f"{peak_waiting} waiting, {last_waiting} waiting at the end, {client_errors} "
                f"client error(s){reuse}")
    return CheckResult(NAME, combine(verdicts), measured, expected, derivation, tuple(details),
                       tuple(values))


def _phase_line(phase: PoolLoadPhase, during: Sequence[PoolSample],
                values: list[tuple[str, float]]) -> str:
    """One load's figures, added to ``values`` under ``<phase>_...``."""
    seconds = phase.ended_at - phase.started_at
    line = f"{phase.name} load: {phase.clients} clients for {seconds:.1f} s, {phase.requests} "
    line += "HTTP answers" if phase.statuses else "transactions"
    if phase.statuses:
        line += " (" + ", ".join(f"{status} x{count}" for status, count in phase.statuses) + ")"
    line += f", {phase.errors} error(s)"
    figures: list[tuple[str, float]] = [("clients", float(phase.clients)),
                                        ("requests", float(phase.requests)),
                                        ("errors", float(phase.errors))]
    if during:
        # PgBouncer's clients of the app pool: in the backends' load, the backends' own pools.
        instants: dict[float, list[PoolSample]] = defaultdict(list)
        for sample in during:
            instants[sample.at].append(sample)
        peak_servers = max(sum(s.sv_total for s in group) for group in instants.values())
        peak_active = max(sum(s.sv_active for s in group) for group in instants.values())
        peak_clients = max(sum(s.cl_active + s.cl_waiting for s in group)
                           for group in instants.values())
        peak_waiting = max(sum(s.cl_waiting for s in group) for group in instants.values())
        figures += [("peak_server_connections", float(peak_servers)),
                    ("peak_server_active", float(peak_active)),
                    ("peak_pgbouncer_clients", float(peak_clients)),
                    ("peak_cl_waiting", float(peak_waiting))]
        line += (f"; peak {peak_servers} server connections ({peak_active} active), peak "
                 f"{peak_clients} PgBouncer clients ({peak_waiting} waiting)")
    else:
        line += "; no SHOW POOLS sample while it ran"
    if phase.stats_before is not None and phase.stats_after is not None and seconds > 0:
        xacts = phase.stats_after.total_xact_count - phase.stats_before.total_xact_count
        if xacts >= 0:
            figures.append(("transactions_per_s", xacts / seconds))
            line += f"; {xacts} transactions, {xacts / seconds:.0f}/s"
    for status, count in phase.statuses:
        figures.append((f"status_{status}", float(count)))
    values.extend((f"{phase.name}_{name}", value) for name, value in figures)
    return line


# -- registration -------------------------------------------------------------------------------


def _judge(ctx: CheckContext, params: NoParams) -> CheckResult:
    expected = ctx.expectations.pgbouncer
    history = ctx.history
    phases = history.pool_phases
    stats = history.pool_stats
    return check_pool_bound(history.pool_samples, history.server_activity,
                            expected.default_pool_size, expected.reserve_pool_size,
                            stats[0] if stats else None, stats[-1] if stats else None,
                            sum(phase.errors for phase in phases),
                            own_connections=max((phase.own_connections for phase in phases),
                                                default=1),
                            pool_mode=expected.pool_mode, phases=phases)


def _servers_objective(result: CheckResult, objectives: Objectives, ctx: CheckContext,
                       params: NoParams) -> ObjectiveResult:
    peak = result.value("peak_server_connections")
    if peak is not None and peak <= objectives.pool_server_connections \
            and not result.value("exercised"):
        return measured_objective("pool_server_connections", objectives, value=None, passed=None,
                                  measured=f"peak {peak:.0f}, but the pool never filled and "
                                  "nobody waited: the load did not test the bound",
                                  derivation="PgBouncer's server connections per pool (SHOW "
                                  "POOLS), which PostgreSQL's pg_stat_activity was checked "
                                  "against")
    return measured_objective("pool_server_connections", objectives, value=peak,
                              passed=(None if peak is None
                                      else peak <= objectives.pool_server_connections),
                              measured="not measured" if peak is None else f"peak {peak:.0f}",
                              derivation="PgBouncer's server connections per pool (SHOW POOLS), "
                              "which PostgreSQL's pg_stat_activity was checked against")


def _clients_objective(result: CheckResult, objectives: Objectives, ctx: CheckContext,
                       params: NoParams) -> ObjectiveResult:
    phases = ctx.history.pool_phases
    how = ("the most concurrent clients one load ran with no error (a transaction or an "
           "answer that failed counts as an error)")
    if not phases:
        return measured_objective("pool_clients", objectives, value=None, passed=None,
                                  measured="no pool load ran", derivation=how)
    clean = [phase.clients for phase in phases if phase.errors == 0]
    served = max(clean, default=0)
    largest = max(phases, key=lambda phase: phase.clients)
    measured = (f"{served} clients served without error" if served >= largest.clients else
                f"{largest.errors} errors among {largest.clients} clients ({largest.name} load)")
    return measured_objective("pool_clients", objectives, value=float(served),
                              passed=served >= objectives.pool_clients, measured=measured,
                              derivation=how)


def _servers_predict(ctx: CheckContext, params: NoParams, objectives: Objectives) -> Prediction:
    pool = ctx.expectations.pgbouncer
    return Prediction("pool_server_connections", NAME,
                      threshold_text(objectives, "pool_server_connections"),
                      f"at most {pool.server_bound}",
                      pool.server_bound <= objectives.pool_server_connections,
                      f"default_pool_size {pool.default_pool_size} + reserve_pool_size "
                      f"{pool.reserve_pool_size} = {pool.server_bound} per pool")


def _clients_predict(ctx: CheckContext, params: NoParams, objectives: Objectives) -> Prediction:
    pool = ctx.expectations.pgbouncer
    return Prediction("pool_clients", NAME, threshold_text(objectives, "pool_clients"),
                      f"up to {pool.max_client_conn} clients, queued for {pool.server_bound} "
                      "servers",
                      pool.max_client_conn >= objectives.pool_clients,
                      f"max_client_conn {pool.max_client_conn}; a waiting client gives up after "
                      f"query_wait_timeout {pool.query_wait_timeout_s:g} s")


register(CheckDef(
    name=NAME, params=NoParams, judge=_judge, pool_size="bound",
    summary="PgBouncer holds at most default_pool_size + reserve server connections, PostgreSQL "
            "agrees, waiters drain, no client errs",
    objectives=(ObjectiveHook("pool_server_connections", _servers_objective, _servers_predict),
                ObjectiveHook("pool_clients", _clients_objective, _clients_predict))))
