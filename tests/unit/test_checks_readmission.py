"""The readmission check on simulated NGINX logs: probes after fail_timeout, at the balancer's
turn, replayed from the heal; an NGINX whose fail_timeout is off by two seconds caught."""

from __future__ import annotations

from dataclasses import replace

import pytest
from nginx_sim import Fault, Nginx, Simulation, Stream, expectations, one_step

from lab.checks.base import Verdict
from lab.checks.readmission import check_readmission
from lab.history import History

pytestmark = pytest.mark.covers("check:readmission", "objective:readmission")

STREAMS = (Stream(20.0, jitter_s=0.025), Stream(5.0, "POST", "/api/messages", "writes",
                                               jitter_s=0.025))


def run(real: Nginx, seed: int = 0, **fault: object) -> History:
    """A simulated kill of backend-1 at 2 s, healed at 6 s, under ``real``."""
    spec = replace(Fault(heal_at=6.0), **fault)
    return Simulation(nginx=real, streams=STREAMS, fault=spec, duration_s=30).run(seed)


def judge(history: History, claimed: Nginx):
    """The readmission check of ``history`` against ``claimed``."""
    return check_readmission(history, expectations(claimed.policy()), "backend-1")


@pytest.mark.parametrize("seed", range(3))
def test_probe_after_fail_timeout_passes(seed: int) -> None:
    """NGINX probes once fail_timeout has passed on its whole-second clock, and re-admits."""
    result = judge(run(Nginx(), seed), Nginx())
    assert result.verdict is Verdict.PASS, result.details
    eligible, measured = result.value("eligible_s"), result.value("measured_s")
    assert eligible is not None and measured is not None and measured >= eligible - 0.01
    assert "second + fail_timeout + 1" in result.derivation


@pytest.mark.parametrize("change", ["fail_timeout +2s", "fail_timeout -2s"])
def test_fail_timeout_two_seconds_off_fails(change: str) -> None:
    """An NGINX probing two seconds early or late is caught."""
    result = judge(run(one_step(Nginx(), change)), Nginx())
    assert result.verdict is Verdict.FAIL
    assert result.details


def test_slow_restart_probe_fails_and_waits_another_fail_timeout() -> None:
    """A probe before the backend is ready fails and skips it again: that conforms."""
    result = judge(run(Nginx(), ready_after_s=10.0), Nginx())
    assert result.verdict is Verdict.PASS, result.details
    assert "failed (the backend not ready yet)" in result.derivation


def test_never_served_again_while_due_fails() -> None:
    """A backend that the counters let NGINX choose but that never serves again fails."""
    history = run(Nginx())
    kept = [e for e in history.access_log
            if not (e.upstream_backends == ("backend-1",) and e.started_at > history.faults[1].at)]
    result = judge(History(requests=history.requests, access_log=kept, faults=history.faults,
                           marks=history.marks), Nginx())
    assert result.verdict is Verdict.FAIL


def test_no_heal_or_short_traffic_is_unknown() -> None:
    """No heal event, or traffic ending before the backend was due, is unknown."""
    history = run(Nginx())
    no_heal = History(access_log=history.access_log, faults=history.faults[:1])
    assert judge(no_heal, Nginx()).verdict is Verdict.UNKNOWN
    early = [e for e in history.access_log if e.started_at < history.faults[1].at + 2]
    short = History(access_log=early, faults=history.faults, marks=history.marks)
    assert judge(short, Nginx()).verdict is Verdict.UNKNOWN
