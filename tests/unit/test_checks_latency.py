"""Latency conformance on simulated NGINX logs: each request during a fault within what its own
tries cost by the configuration; a no-answer exceeds every bound unless the configuration makes
NGINX wait longer than the client."""

from __future__ import annotations

from dataclasses import replace

import pytest
from nginx_sim import Fault, Nginx, Simulation, Stream, expectations, one_step

from lab.checks import Verdict, check_latency
from lab.checks.latency import chance_allowance
from lab.expectations import FailureMode
from lab.history import History

pytestmark = pytest.mark.covers("check:latency")

READS = (Stream(20.0, jitter_s=0.025),)
MODES = {"unreachable": FailureMode.UNREACHABLE, "frozen": FailureMode.FROZEN,
         "slowed": None}


def run(real: Nginx, mode: str = "unreachable", seed: int = 0, **fault: object) -> History:
    """A simulated run with backend-1 failing from 2 s to 8 s (12 s when frozen)."""
    spec = replace(Fault(mode=mode, heal_at=12.0 if mode == "frozen" else 8.0), **fault)
    return Simulation(nginx=real, streams=READS, fault=spec, duration_s=16).run(seed)


def judge(history: History, claimed: Nginx, mode: str = "unreachable", added: float = 0.0):
    """The latency check of ``history`` against ``claimed``."""
    del mode   # the check reads what each try did from the log, not the fault's kind
    return check_latency(history, expectations(claimed.policy()), added_latency_s=added)


@pytest.mark.parametrize("mode", ["unreachable", "frozen"])
def test_requests_within_their_tries_pass(mode: str) -> None:
    """Each retried request costs its failed try's timeout and no more: pass."""
    result = judge(run(Nginx(), mode), Nginx(), mode)
    assert result.verdict is Verdict.PASS, result.details
    assert result.value("inside_p99_s") > 0.9


@pytest.mark.parametrize(("mode", "change"), [("unreachable", "connect_timeout +25%"),
                                              ("frozen", "read_timeout +25%")])
def test_timeout_a_quarter_longer_fails(mode: str, change: str) -> None:
    """Tries that wait 25 % longer than the configured timeout are beyond every bound."""
    result = judge(run(one_step(Nginx(), change), mode), Nginx(), mode)
    assert result.verdict is Verdict.FAIL
    assert result.value("over_bound") > result.value("chance_allowance")


def test_no_answer_fails_unless_the_configuration_waits_longer() -> None:
    """A client giving up inside a 60 s connect timeout conforms; the same no-answers judged
    against a 1 s connect timeout are beyond every bound."""
    config = replace(Nginx(), connect_timeout_s=60.0, next_upstream=("http_500",))
    history = run(config)
    passed = judge(history, config)
    assert passed.verdict is Verdict.PASS, passed.details
    assert passed.value("unanswered") > 0 and "p99 no answer" in passed.measured
    failed = judge(history, replace(config, connect_timeout_s=1.0))
    assert failed.verdict is Verdict.FAIL
    assert failed.value("unexplained_unanswered") > 0


def test_injected_latency_shows_and_stays_bounded() -> None:
    """A slowed link adds its delay to the tries over it: within the bound, and visible."""
    result = judge(run(Nginx(), "slowed", added_s=0.4), Nginx(), "slowed", added=0.4)
    assert result.verdict is Verdict.PASS, result.details
    never = judge(run(Nginx(), "slowed", added_s=0.0), Nginx(), "slowed", added=0.4)
    assert never.verdict is Verdict.FAIL
    assert any("did not reach the clients" in d for d in never.details)


def test_no_fault_is_unknown() -> None:
    """Without a fault the configuration bounds no latency."""
    history = run(Nginx())
    quiet = History(requests=history.requests, access_log=history.access_log)
    assert judge(quiet, Nginx()).verdict is Verdict.UNKNOWN


def test_chance_allowance_from_sample_sizes() -> None:
    """The allowance keeps (inside / all) ** (allowance + 1) under 1 in 1000."""
    assert chance_allowance(0, 100) == 0
    assert chance_allowance(10, 80) == 3
    allowed = chance_allowance(92, 228)
    assert (92 / 320) ** (allowed + 1) < 0.001 <= (92 / 320) ** allowed
