"""Every objective judged on a check's measurement (pass, fail, unknown) and predicted from a
configuration (reachable or not), through the check registry as the runner uses it."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from nginx_sim import failover
from synthetic_history import T0, policy, request
from test_checks_dependency import outage
from test_checks_locks import IV, frozen_holder, killed_holder, run, steady
from test_rate_limit_model import nginx_log, rule, simultaneous, spaced

from lab.checks import CHECKS, CheckContext, Observation, run_check
from lab.checks.registry import predict
from lab.config import LabConfig
from lab.expectations import (
    Expectations,
    FailureMode,
    Part,
    duration_names,
    evaluate_duration,
)
from lab.history import AccessLogEntry, HeaderSample, History, Outcome, PoolLoadPhase, PoolSample
from lab.objectives import Objectives, defaults
from lab.topology.expect import claimed
from lab.verdict import Verdict

pytestmark = pytest.mark.covers(*(f"objective:{name}" for name in (
    "ejection", "readmission", "availability", "health_latency", "failing_latency",
    "duplicate_job_runs", "lost_writes", "pool_server_connections", "pool_clients", "rate_limits",
    "hsts_max_age", "dependency_recovery", "lock_takeover")))

DEFAULTS = Objectives()


def expectations(config: LabConfig | None = None, **upstream: object) -> Expectations:
    """The claimed default configuration, its upstream policy replaced by the synthetic one."""
    base = claimed(config or LabConfig())
    nginx = base.nginx
    parts = dict(base.parts)
    parts["nginx"] = Part(dataclasses.replace(nginx, upstream=policy(**upstream)), "test")
    return dataclasses.replace(base, parts=parts)


def judged(check: str, history: History, params: dict[str, Any] | None = None, *,
           objectives: Objectives = DEFAULTS, expect: Expectations | None = None,
           **ctx: Any) -> tuple[Any, dict[str, Any]]:
    """The check's result and its objectives by name."""
    definition = CHECKS.get(check)
    context = CheckContext(history=history, expectations=expect or expectations(), **ctx)
    result = run_check(definition, definition.params(**(params or {})), context, objectives)
    return result, {o.name: o for o in result.objectives}


def predicted(check: str, params: dict[str, Any] | None = None, *,
              objectives: Objectives = DEFAULTS, expect: Expectations | None = None,
              **ctx: Any) -> dict[str, Any]:
    """The check's predictions by objective."""
    definition = CHECKS.get(check)
    context = CheckContext(history=History(), expectations=expect or expectations(), **ctx)
    return {p.objective: p for p in predict(definition, definition.params(**(params or {})),
                                            context, objectives)}


def tightened(**values: Any) -> Objectives:
    return defaults().with_overrides(values, "test").values


KILL = {"failure_modes": {"backend-2": FailureMode.UNREACHABLE}, "rate_per_s": 20.0}


# -- ejection, readmission ---------------------------------------------------------------------


def test_ejection_objective() -> None:
    """Out of rotation in about 1.1 s meets 50 s and misses 0.5 s; never ejected fails."""
    history = failover()
    result, objectives = judged("ejection", history, {"target": "backend-2"}, **KILL)
    assert result.verdict is Verdict.PASS and objectives["ejection"].verdict is Verdict.PASS
    assert objectives["ejection"].value == pytest.approx(result.value("measured_s"))
    _, strict = judged("ejection", history, {"target": "backend-2"},
                       objectives=tightened(ejection=0.5), **KILL)
    assert strict["ejection"].verdict is Verdict.FAIL
    never = failover(max_fails=0)
    result, objectives = judged("ejection", never, {"target": "backend-2"},
                                expect=expectations(max_fails=0), **KILL)
    assert result.verdict is Verdict.PASS, result  # it did what max_fails = 0 says
    assert objectives["ejection"].verdict is Verdict.FAIL
    assert "never ejected" in objectives["ejection"].measured


def test_ejection_objective_is_unknown_without_a_measurement() -> None:
    """No fault in the history: nothing was measured, so the objective cannot pass."""
    _, objectives = judged("ejection", History(), {"target": "backend-2"}, **KILL)
    assert objectives["ejection"].verdict is Verdict.UNKNOWN


def test_ejection_prediction() -> None:
    """The worst case c + max_fails * g is predicted; max_fails = 0 is unreachable."""
    p = predicted("ejection", {"target": "backend-2"}, **KILL)["ejection"]
    assert p.reachable is True and "1 + 3 * 1 * 0.150 = 1.450 s" in p.arithmetic
    p = predicted("ejection", {"target": "backend-2"}, expect=expectations(max_fails=0),
                  **KILL)["ejection"]
    assert p.reachable is False and p.predicted == "never ejected"


def test_ejection_prediction_under_least_conn_and_worker_counters() -> None:
    """least_conn sends a failed backend no try while one to it hangs: max_fails tries, one
    after another, each c plus a turn of its worker's counter; round robin overlaps them. The
    scenario's wait (``ejection(c)``) is the same arithmetic."""
    upstream = {"balancing": "least_conn", "worker_processes": 2, "zone": False}
    p = predicted("ejection", {"target": "backend-2"}, expect=expectations(**upstream),
                  **KILL)["ejection"]
    assert "3 * (1 + 2 * 0.150) = 3.900 s" in p.arithmetic, p.arithmetic
    assert "a guide, not a bound" in p.arithmetic
    names = duration_names(expectations(**upstream), rate_per_s=20.0)
    assert names["workers"] == 2 and names["least_conn"] == 1
    assert evaluate_duration("ejection(connect_timeout)", names) == pytest.approx(3.9)
    # Tries the clients abandon (c at their timeout) are not counted and end with the client:
    # no serial pace to wait out.
    assert evaluate_duration("ejection(client_timeout)", names) == pytest.approx(10 + 3 * 2 * 0.15)
    rr = duration_names(expectations(worker_processes=2, zone=False), rate_per_s=20.0)
    assert evaluate_duration("ejection(connect_timeout)", rr) == pytest.approx(1 + 3 * 2 * 0.15)


def test_readmission_objective_and_prediction() -> None:
    """Re-admitted about fail_timeout after the last failure: within 30 s, not within 1 s."""
    history = failover(heal_at=8.0)
    result, objectives = judged("readmission", history, {"target": "backend-2"}, **KILL)
    assert objectives["readmission"].verdict is Verdict.PASS, (result, objectives)
    _, strict = judged("readmission", history, {"target": "backend-2"},
                       objectives=tightened(readmission=0.1), **KILL)
    assert strict["readmission"].verdict is Verdict.FAIL
    assert predicted("readmission", {"target": "backend-2"},
                     **KILL)["readmission"].reachable is True
    slow = predicted("readmission", {"target": "backend-2"},
                     expect=expectations(fail_timeout_s=45.0), **KILL)
    assert slow["readmission"].reachable is False and "45" in slow["readmission"].arithmetic


# -- availability, durability ------------------------------------------------------------------


def test_availability_objective_and_prediction() -> None:
    """Retried failures cost nothing; unretried ones cost a client error each."""
    _, objectives = judged("availability", failover(), **KILL)
    assert objectives["availability"].verdict is Verdict.PASS
    _, objectives = judged("availability", failover(next_upstream=("http_502",)), **KILL)
    assert objectives["availability"].verdict is Verdict.FAIL
    assert predicted("availability", **KILL)["availability"].reachable is True
    off = predicted("availability", expect=expectations(next_upstream=()), planned_s=20.0, **KILL)
    assert (off["availability"].reachable is False
            and "not retried" in off["availability"].arithmetic)


def test_availability_prediction_counts_the_retry_timeout_and_the_connect_lag() -> None:
    """A proxy_next_upstream_timeout no longer than one failed connect forbids the retry its
    conditions allow (predicting "no client error" there would miss on every kill); and the
    requests routed to a dead backend while its first counted connect still hangs fail too:
    max_fails x workers + floor(c x its rate), as lint counts them."""
    timed_out = predicted("availability", planned_s=60.0, **KILL,
                          expect=expectations(next_upstream_timeout_s=1.0,
                                              connect_timeout_s=2.0))["availability"]
    assert timed_out.reachable is False, timed_out
    assert "proxy_next_upstream_timeout 1 s passed (2.000 s)" in timed_out.arithmetic
    # 3 servers at 20 req/s: 6.67 req/s each; shared counters (zone): M = 3; c = 2 s.
    assert "3 + 2 s x 6.67 req/s = 16 errors" in timed_out.arithmetic, timed_out.arithmetic
    assert timed_out.predicted == f"about {1 - 16 / 1200:.4f}"
    roomy = predicted("availability", planned_s=60.0, **KILL,
                      expect=expectations(next_upstream_timeout_s=3.0,
                                          connect_timeout_s=2.0))["availability"]
    assert roomy.predicted == "no client error from the failing backend", roomy
    single = predicted("availability", planned_s=60.0, **KILL,
                       expect=expectations(next_upstream_tries=1))["availability"]
    assert "(proxy_next_upstream_tries 1 used up)" in single.arithmetic, single.arithmetic
    # failover kills twice: each kill is ejected anew, from a count back at zero.
    twice = predicted("availability", planned_s=60.0, **KILL, injections={"backend-2": 2},
                      expect=expectations(next_upstream_tries=1))["availability"]
    assert "2 x (3 + 1 s x 6.67 req/s) = 18 errors" in twice.arithmetic, twice.arithmetic


def _writes(stored: int, acknowledged: int = 3) -> tuple[History, frozenset[str]]:
    history = History()
    for i in range(acknowledged):
        history.requests.append(dataclasses.replace(request(i, i), method="POST", status=201,
                                                    request_id=f"w-{i}", client="writes"))
    return history, frozenset(f"w-{i}" for i in range(stored))


def test_lost_writes_objective_and_prediction() -> None:
    """An acknowledged write missing afterwards fails; an unread store is unknown, never a pass."""
    history, stored = _writes(3)
    _, objectives = judged("durability", history, observations={Observation.STORED_WRITES: stored})
    assert objectives["lost_writes"].verdict is Verdict.PASS
    history, stored = _writes(2)
    _, objectives = judged("durability", history, observations={Observation.STORED_WRITES: stored})
    assert (objectives["lost_writes"].verdict is Verdict.FAIL
            and objectives["lost_writes"].value == 1)
    result, objectives = judged("durability", history,
                                unavailable={Observation.STORED_WRITES: "OperationalError: gone"})
    assert result.verdict is Verdict.UNKNOWN and "gone" in result.derivation
    assert objectives["lost_writes"].verdict is Verdict.UNKNOWN
    assert predicted("durability")["lost_writes"].reachable is True
    async_commit = claimed(LabConfig().with_overrides("postgres", synchronous_commit=False))
    crash = predicted("durability", expect=async_commit,
                      failure_modes={"postgres": FailureMode.UNREACHABLE})
    assert crash["lost_writes"].reachable is False


# -- latency -------------------------------------------------------------------------------------


def _health(request_time_s: float) -> History:
    history = History()
    for i in range(50):
        history.requests.append(dataclasses.replace(request(i, i * 0.05, latency=0.009),
                                                    request_id=f"h-{i}"))
        history.access_log.append(AccessLogEntry(T0 + i * 0.05 + request_time_s, request_time_s,
                                                 "GET", "/health", 200, ("x",), ("backend-1",),
                                                 ("200",),
                                                 (request_time_s,), "-", request_id=f"h-{i}"))
    return history


def test_health_latency_is_judged_at_nginx() -> None:
    """NGINX's own $request_time decides, with the client's figure shown beside it."""
    _, objectives = judged("latency", _health(0.002))
    health = objectives["health_latency"]
    assert (health.verdict is Verdict.PASS and "2 ms at NGINX" in health.measured
            and "9 ms" in health.measured)
    _, objectives = judged("latency", _health(0.008))
    assert objectives["health_latency"].verdict is Verdict.FAIL
    without_log = _health(0.002)
    without_log.access_log.clear()
    _, objectives = judged("latency", without_log)
    assert objectives["health_latency"].verdict is Verdict.UNKNOWN
    other = History(requests=[dataclasses.replace(r, path="/api/conversations")
                              for r in _health(0.002).requests])
    _, objectives = judged("latency", other)
    assert "health_latency" not in objectives  # about /health only


def test_failing_latency_objective_and_prediction() -> None:
    """A kill costs a connect timeout (1 s) inside the fault: within 6 s, not within 0.5 s."""
    history = failover()
    _, objectives = judged("latency", history, **KILL)
    assert objectives["failing_latency"].verdict is Verdict.PASS
    _, strict = judged("latency", history, objectives=tightened(failing_latency=0.5), **KILL)
    assert strict["failing_latency"].verdict is Verdict.FAIL
    _, healthy = judged("latency", _health(0.002))
    assert "failing_latency" not in healthy  # nothing failed
    assert predicted("latency", **KILL)["failing_latency"].reachable is True
    frozen = predicted("latency", expect=expectations(read_timeout_s=30.0),
                       failure_modes={"backend-2": FailureMode.FROZEN})
    assert frozen["failing_latency"].reachable is False


# -- locks ---------------------------------------------------------------------------------------

LOCKS = {"observations": {Observation.JOB_RECORDS: True}}


def test_duplicate_job_runs_on_exclusivity() -> None:
    """One run per tick meets zero duplicates; a tick run twice fails it."""
    _, objectives = judged("lock-exclusivity", steady(), **LOCKS)
    assert objectives["duplicate_job_runs"].verdict is Verdict.PASS
    twice = steady()
    twice.job_runs.append(run(999, 3, "backend-3", at=0.3))
    _, objectives = judged("lock-exclusivity", twice, **LOCKS)
    assert objectives["duplicate_job_runs"].verdict is Verdict.FAIL


def test_duplicate_job_runs_on_fencing() -> None:
    """An overlap whose stale write was refused is no duplicate; one that landed is."""
    _, objectives = judged("fencing", frozen_holder(fenced=True), **LOCKS)
    assert objectives["duplicate_job_runs"].verdict is Verdict.PASS
    unfenced = claimed(LabConfig().with_overrides("backend", fencing=False))
    result, objectives = judged("fencing", frozen_holder(fenced=False), expect=unfenced, **LOCKS)
    assert result.verdict is Verdict.PASS  # no refusal, as configured
    assert objectives["duplicate_job_runs"].verdict is Verdict.FAIL
    assert predicted("fencing", expect=unfenced)["duplicate_job_runs"].reachable is False


def test_duplicate_job_runs_predictions() -> None:
    """Locking off, or a lease shorter than the job and never renewed, cannot meet zero."""
    assert predicted("lock-exclusivity")["duplicate_job_runs"].reachable is True
    off = claimed(LabConfig().with_overrides("backend", locking=False))
    assert predicted("lock-exclusivity", expect=off)["duplicate_job_runs"].reachable is False
    short = claimed(LabConfig().with_overrides("backend", lock_renewal=False, lock_ttl_s=1.0,
                                               job_duration_s=3.0))
    assert predicted("lock-exclusivity", expect=short)["duplicate_job_runs"].reachable is False


def test_lock_takeover_objective_and_prediction() -> None:
    """The dead holder's job runs again in time, late, or never (failing, not a 0 s takeover)."""
    config = LabConfig().with_overrides("backend", job_interval_s=IV)
    expect = claimed(config)
    _, objectives = judged("lock-takeover", killed_holder(next_at_tick=10), {"target": "backend-1"},
                           expect=expect, **LOCKS)
    assert objectives["lock_takeover"].verdict is Verdict.PASS
    _, objectives = judged("lock-takeover", killed_holder(next_at_tick=10), {"target": "backend-1"},
                           expect=expect, objectives=tightened(lock_takeover=1), **LOCKS)
    assert objectives["lock_takeover"].verdict is Verdict.FAIL
    never = killed_holder(next_at_tick=10)
    # no run after the kill
    never.job_runs = [r for r in never.job_runs if r.started_at < T0 + 6 * IV]
    result, objectives = judged("lock-takeover", never, {"target": "backend-1"}, expect=expect,
                                objectives=tightened(lock_takeover=5), **LOCKS)
    assert result.value("measured_s") is None
    assert objectives["lock_takeover"].verdict is Verdict.FAIL, (result, objectives)
    assert predicted("lock-takeover", {"target": "backend-1"})["lock_takeover"].reachable is True
    long = claimed(LabConfig().with_overrides("backend", lock_ttl_s=40.0))
    assert predicted("lock-takeover", {"target": "backend-1"},
                     expect=long)["lock_takeover"].reachable is False


# -- pool, rate limits, TLS, dependencies -------------------------------------------------------


def _pool(peak: int, *, clients: int = 300, errors: int = 0) -> History:
    history = History()
    for t in range(8):
        servers = min(peak, 10 + t * 10)
        history.pool_samples.append(PoolSample(T0 + t, 40, 3 if t < 7 else 0, servers * 2 // 3,
                                               servers - servers * 2 // 3, 0, 0, 0, 0.0, "app",
                                               "app", "transaction"))
    history.pool_phases.append(PoolLoadPhase("direct", T0, T0 + 8, clients, 9000, errors))
    return history


def test_pool_objectives_and_predictions() -> None:
    """30 server connections serving 300 clients passes; 96, or errors among 300 clients, fail."""
    _, objectives = judged("pool-bound", _pool(30))
    assert objectives["pool_server_connections"].verdict is Verdict.PASS
    assert objectives["pool_clients"].verdict is Verdict.PASS
    _, objectives = judged("pool-bound", _pool(96, errors=100))
    assert objectives["pool_server_connections"].verdict is Verdict.FAIL
    assert objectives["pool_clients"].verdict is Verdict.FAIL
    wide = claimed(LabConfig().with_overrides("pgbouncer", default_pool_size=300,
                                              max_client_conn=200))
    predictions = predicted("pool-bound", expect=wide)
    assert predictions["pool_server_connections"].reachable is False
    assert predictions["pool_clients"].reachable is False
    assert all(p.reachable for p in predicted("pool-bound").values())


def test_rate_limit_objective_and_prediction() -> None:
    """Burst 5 lets 6 through at once, within the objective; burst 10 lets 11, beyond it."""
    expect = claimed(LabConfig())
    history = History(access_log=nginx_log(rule(burst=5), simultaneous(12)))
    _, objectives = judged("rate-limit", history, {"location": "/api/auth/"}, expect=expect)
    assert objectives["rate_limits"].verdict is Verdict.PASS, objectives
    history = History(access_log=nginx_log(rule(burst=10), simultaneous(12)))
    _, objectives = judged("rate-limit", history, {"location": "/api/auth/"}, expect=expect)
    assert objectives["rate_limits"].verdict is Verdict.FAIL
    steady_rate = History(access_log=nginx_log(rule(burst=5), spaced(15, 50)))
    _, objectives = judged("rate-limit", steady_rate, {"location": "/api/auth/"}, expect=expect)
    assert objectives["rate_limits"].verdict is Verdict.PASS
    assert predicted("rate-limit", {"location": "/api/auth/"})["rate_limits"].reachable is True
    zones = LabConfig().nginx.rate_limits
    loose = claimed(LabConfig().with_overrides(
        "nginx", rate_limits=(zones[0].model_copy(update={"burst": 10}),)))
    assert predicted("rate-limit", {"location": "/api/auth/"},
                     expect=loose)["rate_limits"].reachable is False
    assert predicted("rate-limit", {"location": "/api/"},
                     expect=loose)["rate_limits"].reachable is False
    assert predicted("rate-limit", {"location": "/nowhere/"}) == {}


def _https(value: str | None) -> HeaderSample:
    headers = (("Strict-Transport-Security", value),) if value is not None else ()
    return HeaderSample("https://127.0.0.1:1/health", 200, headers)


def test_hsts_objective_and_prediction() -> None:
    """A year on every HTTPS answer passes; five minutes, or a missing header, fails."""
    _, objectives = judged("tls", History(
        header_samples=[_https("max-age=31536000; includeSubDomains")]))
    assert objectives["hsts_max_age"].verdict is Verdict.PASS
    _, objectives = judged("tls", History(header_samples=[_https("max-age=300")]))
    assert objectives["hsts_max_age"].verdict is Verdict.FAIL
    _, objectives = judged("tls", History(header_samples=[_https("max-age=31536000"),
                                                          _https(None)]))
    assert objectives["hsts_max_age"].verdict is Verdict.FAIL
    _, objectives = judged("tls", History())
    assert objectives["hsts_max_age"].verdict is Verdict.UNKNOWN
    assert predicted("tls")["hsts_max_age"].reachable is True
    short = claimed(LabConfig().with_overrides("nginx", hsts_max_age_s=300))
    assert predicted("tls", expect=short)["hsts_max_age"].reachable is False


def test_dependency_recovery_objective_and_prediction() -> None:
    """Clients served 1 s after the dependency is back meets 30 s and misses 0.5 s."""
    params = {"client": "reads", "within": "5"}
    _, objectives = judged("recovery", outage(0.02), params)
    assert objectives["dependency_recovery"].verdict is Verdict.PASS
    _, objectives = judged("recovery", outage(0.02), params,
                           objectives=tightened(dependency_recovery=0.5))
    assert objectives["dependency_recovery"].verdict is Verdict.FAIL
    postgres = {"failure_modes": {"postgres": FailureMode.UNREACHABLE}}
    assert predicted("recovery", params, **postgres)["dependency_recovery"].reachable is True
    slow = claimed(LabConfig().with_overrides("pgbouncer", server_login_retry_s=40))
    p = predicted("recovery", params, expect=slow, **postgres)["dependency_recovery"]
    assert p.reachable is False and "server_login_retry 40 s" in p.arithmetic


def test_an_objective_that_crashes_is_unknown() -> None:
    """A measurement an objective cannot read makes it unknown; the check's own verdict stands."""
    history = History(requests=[request(0, 0, outcome=Outcome.OK)])
    result, objectives = judged("availability", history)
    assert result.verdict is Verdict.PASS and objectives["availability"].verdict is Verdict.PASS
    broken = dataclasses.replace(expectations(), parts={})
    result, _ = judged("ejection", failover(), {"target": "backend-2"}, expect=broken,
                       **KILL)
    assert result.verdict is Verdict.UNKNOWN and "expectations were not built" in result.derivation


def test_the_checks_judge_the_jobs_the_contract_names() -> None:
    """A backend of your own runs its own jobs: lock-exclusivity judges those (from the
    contract, through the expectations record), not the reference backend's names."""
    job = "send-reminders"
    twice = steady(jobs=(job,))
    twice.job_runs.append(run(999, 3, "backend-3", at=0.3, job=job))
    reference = claimed(LabConfig())
    result, _ = judged("lock-exclusivity", twice, expect=reference, **LOCKS)
    # The reference jobs never ran: judged as jobs no backend ever took, not as send-reminders.
    assert result.verdict is Verdict.FAIL and "no backend ever took" in result.measured
    own = dataclasses.replace(reference, parts={**reference.parts, "backend": Part(
        dataclasses.replace(reference.backend, jobs=(job,)), "test")})
    result, objectives = judged("lock-exclusivity", twice, expect=own, **LOCKS)
    assert result.verdict is Verdict.FAIL
    assert objectives["duplicate_job_runs"].verdict is Verdict.FAIL
