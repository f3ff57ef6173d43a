"""The ejection check on simulated NGINX logs: the configuration's counters, balancer, retries
and timeouts replayed, and an NGINX that differs by one step caught."""

from __future__ import annotations

from dataclasses import replace

import pytest
from nginx_sim import T0, Fault, Nginx, Simulation, Stream, expectations, one_step

from lab.checks.base import Verdict
from lab.checks.ejection import check_ejection
from lab.checks.upstream_replay import AttemptEnd, ViolationKind, replay, requests_to_pool
from lab.history import History

pytestmark = pytest.mark.covers("check:ejection", "objective:ejection")

STREAMS = (Stream(20.0, jitter_s=0.025), Stream(5.0, "POST", "/api/messages", "writes",
                                               jitter_s=0.025))
MODES = {"unreachable": "kill", "frozen": "freeze", "refused": "stop"}


def run(real: Nginx, mode: str = "unreachable", seed: int = 0, **fault: object) -> History:
    """One simulated run of ``real`` with backend-1 failing in ``mode``."""
    spec = Fault(mode=mode, kind=MODES[mode], heal_at=12.0 if mode == "frozen" else 8.0)
    return Simulation(nginx=real, streams=STREAMS, fault=replace(spec, **fault),
                      duration_s=30).run(seed)


def judge(history: History, claimed: Nginx):
    """The ejection check of ``history`` against the configuration ``claimed``."""
    return check_ejection(history, expectations(claimed.policy()), "backend-1")


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("seed", range(3))
def test_nginx_following_its_configuration_passes(mode: str, seed: int) -> None:
    """An NGINX that runs the configuration it is judged against passes, in every mode."""
    result = judge(run(Nginx(), mode, seed), Nginx())
    assert result.verdict is Verdict.PASS, result.details
    assert result.value("ejected") == 1.0
    assert "out of rotation after 3 counted failures" in result.measured


@pytest.mark.parametrize("change", ["max_fails +1", "max_fails -1", "connect_timeout +25%"])
def test_one_step_off_fails(change: str) -> None:
    """An NGINX one step away from its configuration fails (the power table has the rates)."""
    results = [judge(run(one_step(Nginx(), change), seed=seed), Nginx()) for seed in range(4)]
    assert any(r.verdict is Verdict.FAIL for r in results), [r.measured for r in results]
    failed = next(r for r in results if r.verdict is Verdict.FAIL)
    assert failed.details and "against the configuration" in failed.measured


def test_read_timeout_off_fails_when_frozen() -> None:
    """A frozen backend's tries wait proxy_read_timeout: one 25 % longer is caught."""
    result = judge(run(one_step(Nginx(), "read_timeout +25%"), "frozen"), Nginx())
    assert result.verdict is Verdict.FAIL
    assert "proxy_read_timeout 5 s" in " ".join(result.details)


def test_missing_retry_fails() -> None:
    """An NGINX that does not retry, judged against one that retries on error and timeout."""
    result = judge(run(replace(Nginx(), next_upstream=("http_502",))), Nginx())
    assert result.verdict is Verdict.FAIL
    assert "retry-missing" in " ".join(result.details)


def test_no_retry_configured_passes_and_errors_are_expected() -> None:
    """proxy_next_upstream without timeout: the tries are not retried, and that conforms."""
    config = replace(Nginx(), next_upstream=("error", "http_503"))
    history = run(config)
    assert judge(history, config).verdict is Verdict.PASS
    assert any(r.status == 504 for r in history.requests)


def test_never_ejecting_configuration_passes_and_the_opposite_fails() -> None:
    """max_fails=0 keeps the backend in rotation; an NGINX that ejects anyway is caught."""
    never = replace(Nginx(), max_fails=0)
    result = judge(run(never), never)
    assert result.verdict is Verdict.PASS
    assert "kept in rotation" in result.measured and result.value("ejected") == 0.0
    assert judge(run(Nginx()), never).verdict is Verdict.FAIL


def test_per_worker_counters_are_replayed_per_worker() -> None:
    """Without a zone each worker counts its own failures: the replay follows each worker."""
    config = replace(Nginx(), zone=False, workers=2)
    result = judge(run(config), config)
    assert result.verdict is Verdict.PASS, result.details
    assert "per worker process" in result.derivation
    assert judge(run(config), Nginx()).verdict is Verdict.FAIL


def test_client_giving_up_counts_no_failure() -> None:
    """A connect timeout longer than the client's patience: NGINX logs 499 and counts nothing,
    so the backend is never ejected, as configured."""
    config = replace(Nginx(), connect_timeout_s=60.0, next_upstream=("http_500", "http_503"),
                     max_fails=100, fail_timeout_s=1)
    result = judge(run(config), config)
    assert result.verdict is Verdict.PASS, result.details
    assert result.value("ejected") == 0.0 and result.value("abandoned", ) > 10
    assert "counts as no failure" in result.derivation


def test_no_inject_event_and_no_log_are_unknown() -> None:
    """Without a fault to time from, or without NGINX's log, nothing is judged."""
    history = run(Nginx())
    assert judge(History(requests=history.requests, access_log=history.access_log),
                 Nginx()).verdict is Verdict.UNKNOWN
    empty = judge(History(requests=history.requests, faults=history.faults), Nginx())
    assert empty.verdict is Verdict.UNKNOWN and "no try reached" in empty.measured


def test_attempts_are_reconstructed_from_the_log() -> None:
    """Each attempt starts where the one before it ended; endings come from the log."""
    history = run(Nginx())
    requests = requests_to_pool(history.access_log, Nginx().policy())
    retried = next(r for r in requests if len(r.attempts) == 2)
    first, second = retried.attempts
    assert first.backend == "backend-1" and first.end is AttemptEnd.CONNECT_TIMEOUT
    assert second.started_at == pytest.approx(first.started_at + first.duration_s)
    assert first.failed and first.retried and not second.failed
    entry = retried.entry_log
    assert first.started_at == pytest.approx(entry.msec - entry.request_time_s)


def test_violation_kinds_name_the_rule() -> None:
    """Routing to a server its counters skip is a violation of that kind, with the rule."""
    r = replay(run(one_step(Nginx(), "max_fails +1"), seed=1).access_log, Nginx().policy())
    kinds = {v.kind for v in r.violations}
    assert kinds <= set(ViolationKind)
    assert T0 < min(v.at for v in r.violations) if r.violations else True


def test_least_conn_is_replayed_by_connections_in_flight() -> None:
    """least_conn: the honest NGINX passes; one routing past its max_fails is caught."""
    config = replace(Nginx(), balancing="least_conn")
    results = [judge(run(config, seed=seed), config) for seed in range(3)]
    assert all(r.verdict is Verdict.PASS for r in results), [r.details for r in results]
    assert "least_conn" in results[0].derivation
    off = [judge(run(replace(config, max_fails=4), seed=seed), config) for seed in range(4)]
    assert any(r.verdict is Verdict.FAIL for r in off)


def test_round_robin_judged_as_least_conn_is_caught() -> None:
    """Round robin keeps sending a hanging backend its share; least_conn would not: judged
    against least_conn, those choices are decisions against the configuration."""
    config = replace(Nginx(), balancing="least_conn")
    r = replay(run(Nginx(), seed=0).access_log, config.policy())
    skipped = [v for v in r.violations if v.kind is ViolationKind.SKIPPED_WHILE_DUE]
    assert skipped and "least_conn" in skipped[0].detail


def test_error_on_a_reused_connection_counts_as_sent() -> None:
    """A POST whose reused keepalive connection breaks was already written: NGINX does not
    retry it without non_idempotent, and the replay does not ask it to."""
    from lab.checks.upstream_replay import Attempt, retry_allowed

    policy = Nginx().policy()
    broken = Attempt(0, 0, "backend-1", 7, 0.0, 0.001, "502", AttemptEnd.ERROR, "POST",
                     "/api/messages", False, 0.002, connect_s=0.0)
    allowed, why = retry_allowed(policy, broken, 0.001, 3)
    assert not allowed and "non_idempotent" in why
    refused = replace(broken, connect_s=None)
    assert retry_allowed(policy, refused, 0.001, 3)[0]


SINGLE = Nginx(servers=("backend-1",), weights=(1,), max_fails=1)


@pytest.mark.parametrize("seed", range(2))
def test_a_single_server_is_never_ejected(seed: int) -> None:
    """One server and no backup: NGINX counts no failure and never skips it (measured on a
    corpus config); the check expects exactly that, and the objective fails it."""
    result = judge(run(SINGLE, seed=seed), SINGLE)
    assert result.verdict is Verdict.PASS, result.details
    assert result.value("never_ejects") == 1.0
    assert "kept in rotation" in result.measured


def test_a_single_server_taken_out_is_caught() -> None:
    """An NGINX that counted a single server's failures (and so answered 'no live upstreams')
    is one step off its configuration."""
    results = [judge(run(replace(SINGLE, counts_single=True), seed=seed), SINGLE)
               for seed in range(3)]
    assert all(r.verdict is Verdict.FAIL for r in results), [r.measured for r in results]


@pytest.mark.parametrize("seed", range(3))
def test_max_fails_1_lowers_the_effective_weight(seed: int) -> None:
    """With max_fails=1 (NGINX's default) each counted failure drops the peer's effective
    weight to 0, so round robin takes it back only after a few turns once fail_timeout has
    passed; a replay without that drop called NGINX's choices 'skipped while due' on a corpus
    config."""
    nginx = Nginx(max_fails=1)
    result = judge(run(nginx, "refused", seed, heal_at=25.0), nginx)
    assert result.verdict is Verdict.PASS, result.details


CAPPED = replace(SINGLE, max_conns=5, connect_timeout_s=20.0)


def test_max_conns_full_is_no_live_upstreams_as_configured() -> None:
    """One server with max_conns=5 and a connect timeout longer than the clients wait: hung
    connects fill it, and NGINX answers 'no live upstreams' at once (a public config's shape);
    the replay counts the tries in flight and finds every decision as configured."""
    history = run(CAPPED, seed=0)
    assert any(e.upstream_backends == ("backend",) for e in history.access_log)
    result = judge(history, CAPPED)
    assert result.verdict is Verdict.PASS, result.details


def test_an_nginx_without_the_max_conns_limit_is_caught() -> None:
    """The same traffic through an NGINX that ignores max_conns routes a sixth try to the
    server: routed while its max_conns were in flight."""
    result = judge(run(replace(CAPPED, max_conns=0), seed=0), CAPPED)
    assert result.verdict is Verdict.FAIL
    assert "max_conns=5 tries already in flight" in " ".join(result.details)
