"""Availability conformance: every non-ok answer explained by the configuration NGINX runs;
durability: every acknowledged write stored."""

from __future__ import annotations

from dataclasses import replace

import pytest
from nginx_sim import Fault, Nginx, Simulation, Stream, expectations

from lab.checks import Verdict, check_availability, check_durability
from lab.history import History, Outcome, RequestRecord

pytestmark = pytest.mark.covers("check:availability", "check:durability")

READS = (Stream(20.0, jitter_s=0.025),)


def run(real: Nginx, mode: str = "unreachable", seed: int = 0, **changes: object) -> History:
    """A simulated run with backend-1 failing from 2 s to 8 s."""
    return Simulation(nginx=real, streams=READS, fault=Fault(mode=mode), duration_s=14,
                      **changes).run(seed)


def judge(history: History, claimed: Nginx):
    """Availability of ``history`` against the configuration ``claimed``."""
    return check_availability(history, expectations(claimed.policy()))


def test_retried_failures_leave_no_error_and_pass() -> None:
    """Failed tries retried elsewhere: every request ok, nothing to explain."""
    result = judge(run(Nginx()), Nginx())
    assert result.verdict is Verdict.PASS, result.details
    assert result.value("ratio") == 1.0
    assert "0 non-ok answers the configuration implies" in result.expected


def test_errors_the_configuration_implies_conform() -> None:
    """Without timeout in proxy_next_upstream each try on the dead backend is a client error:
    expected, and explained one by one."""
    config = replace(Nginx(), next_upstream=("error", "http_503"))
    result = judge(run(config), config)
    assert result.verdict is Verdict.PASS, result.details
    assert result.value("ratio") < 1.0
    assert "not retried: proxy_next_upstream error http_503 lacks timeout" in result.expected
    assert result.value("expected_errors") == result.value("failed")


def test_tries_one_errors_conform() -> None:
    """proxy_next_upstream_tries 1: no retry, each error explained by the tries."""
    config = replace(Nginx(), tries=1)
    result = judge(run(config), config)
    assert result.verdict is Verdict.PASS, result.details
    assert "proxy_next_upstream_tries 1 used up" in result.expected


def test_missing_retry_is_unexplained() -> None:
    """An NGINX that does not retry, judged against a configuration that does, fails."""
    result = judge(run(replace(Nginx(), next_upstream=("http_502",))), Nginx())
    assert result.verdict is Verdict.FAIL
    assert result.value("unexplained") > 0
    assert "against the configuration" in result.details[0]


def test_client_giving_up_inside_a_long_timeout_conforms() -> None:
    """connect timeout 60 s > the client's 10 s: the no-answers are what the config implies."""
    config = replace(Nginx(), connect_timeout_s=60.0, next_upstream=("http_500",))
    result = judge(run(config), config)
    assert result.verdict is Verdict.PASS, result.details
    assert result.value("unknown") > 0
    assert "the client gave up first" in result.expected


def test_error_with_no_fault_is_unexplained() -> None:
    """A 500 from a healthy topology is not something the configuration implies."""
    history = run(Nginx())
    healthy = History(requests=[r for r in history.requests if r.sent_at < history.faults[0]
                                .started_at], access_log=history.access_log)
    entry = next(e for e in healthy.access_log if e.request_id == healthy.requests[0].request_id)
    healthy.access_log[healthy.access_log.index(entry)] = replace(
        entry, status=500, upstream_statuses=("500",))
    healthy.requests[0] = replace(healthy.requests[0], status=500, outcome=Outcome.FAIL)
    result = judge(healthy, Nginx())
    assert result.verdict is Verdict.FAIL
    assert "with no fault in place" in result.details[0]


def test_request_nginx_never_logged_is_unexplained_and_none_unknown() -> None:
    """A client failure NGINX never saw is unexplained; no request at all is unknown."""
    history = run(Nginx())
    lost = RequestRecord(10_000, "reads", "GET", "/health", history.requests[0].sent_at,
                         history.requests[0].sent_at, None, None, None, Outcome.FAIL,
                         "connection reset", "r-lost")
    result = judge(History(requests=[*history.requests, lost], access_log=history.access_log,
                           faults=history.faults, marks=history.marks), Nginx())
    assert result.verdict is Verdict.FAIL and "never reached NGINX's log" in result.details[0]
    assert judge(History(), Nginx()).verdict is Verdict.UNKNOWN


def test_lost_acknowledged_write_fails() -> None:
    """An acknowledged write missing from the store fails."""
    result = check_durability(frozenset({"1", "2", "3"}), frozenset({"1", "3", "4"}))
    assert result.verdict is Verdict.FAIL
    assert any("lost acknowledged writes: 2" in d for d in result.details)


def test_all_writes_stored_passes_and_missing_sets_are_unknown() -> None:
    """Every acknowledged write stored passes; without both sets, or no write, unknown."""
    assert check_durability(frozenset({"1"}), frozenset({"1", "7"})).verdict is Verdict.PASS
    assert check_durability(frozenset({"1"}), None).verdict is Verdict.UNKNOWN
    assert check_durability(frozenset(), frozenset({"1"})).verdict is Verdict.UNKNOWN
