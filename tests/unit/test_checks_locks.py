"""Job-lock checks on synthetic job-run histories: exclusivity, liveness,
fencing, takeover, pause."""

from __future__ import annotations

from dataclasses import replace

import pytest
from synthetic_history import SERVERS, T0

from lab.checks.base import Verdict
from lab.checks.lock_spans import find_overlaps
from lab.checks.locks import check_fencing, check_lock_exclusivity, check_lock_takeover
from lab.checks.locks_store import check_jobs_paused_while_redis_down
from lab.faults import FAULTS
from lab.history import FaultEvent, FaultPhase, FencingRejection, History, JobRun

pytestmark = pytest.mark.covers("check:fencing", "check:jobs-paused", "check:lock-exclusivity",
                                "check:lock-takeover")

IV = 2.0                     # LAB_JOB_INTERVAL_S
TTL = 10.0                   # LAB_LOCK_TTL_S
JOB = "recurring-messages"
OTHER = "phone-linking-recovery"
TICK0 = int(T0 / IV)         # the tick scheduled at T0
TOKEN0 = 1_000


def run(i: int, k: int, node: str, *, token: int | None = None, at: float = 0.01,
        duration: float | None = 0.5, outcome: str = "ok", job: str = JOB) -> JobRun:
    """A run of ``job`` for tick TICK0 + k, started ``at`` s after the tick (None: unfinished)."""
    started = (TICK0 + k) * IV + at
    return JobRun(id=i, job=job, node=node, fencing_token=TOKEN0 + i if token is None else token,
                  tick=TICK0 + k, started_at=started,
                  finished_at=None if duration is None else started + duration,
                  outcome="running" if duration is None else outcome)


def fault(kind: str, target: str, phase: FaultPhase, at: float) -> FaultEvent:
    """A fault action on ``target`` completed at T0 + ``at`` (issued 50 ms earlier)."""
    return FaultEvent(kind, target, phase, T0 + at, T0 + at - 0.05,
                      effect=FAULTS.get(kind).effect)


def steady(ticks: int = 20, skip: tuple[int, ...] = (), jobs: tuple[str, ...] = (JOB,)) -> History:
    """One healthy run per tick per job, round robin over the nodes,
    observed for ``ticks`` ticks."""
    history = History()
    history.mark("start", T0)
    history.mark("end", T0 + ticks * IV)
    i = 0
    for job in jobs:
        for k in range(ticks + 1):
            i += 1
            if k not in skip:
                history.job_runs.append(run(i, k, SERVERS[k % 3], job=job))
    return history


def exclusivity(history: History, **options: object):
    """check_lock_exclusivity with the lab's defaults for one job."""
    kwargs: dict[str, object] = {"job_interval_s": IV, "lock_ttl_s": TTL, "jobs": (JOB,)}
    kwargs.update(options)
    return check_lock_exclusivity(history, **kwargs)  # type: ignore[arg-type]


def frozen_holder(*, fenced: bool) -> History:
    """Holder backend-1 frozen 15 s mid-run at tick 5; others run after its
    lease; it then writes."""
    history = steady(skip=tuple(range(5, 12)))
    history.faults += [fault("freeze", "backend-1", FaultPhase.INJECT, 5 * IV + 0.2),
                       fault("freeze", "backend-1", FaultPhase.HEAL, 5 * IV + 15.2)]
    # Its run resumes at the unfreeze and finishes 0.3 s later: fenced, or applied.
    stale = run(500, 5, "backend-1", token=TOKEN0 + 5, duration=15.3,
                outcome="fenced" if fenced else "ok")
    history.job_runs.append(stale)
    # The lease ran out at +10.2; tick 11 (+22) is the first to find it free.
    history.job_runs += [run(600 + k, k, "backend-2", token=TOKEN0 + 600 + k) for k in (11,)]
    if fenced:
        history.fencing_rejections.append(FencingRejection(
            JOB, "backend-1", TOKEN0 + 5, TOKEN0 + 611, stale.finished_at or 0.0))
    return history


def killed_holder(next_at_tick: int) -> History:
    """Holder backend-1 killed mid-run at tick 5; the next run of the job
    comes at ``next_at_tick``."""
    history = steady(skip=tuple(range(5, next_at_tick)))
    history.job_runs.append(run(500, 5, "backend-1", duration=None))
    history.faults += [fault("kill", "backend-1", FaultPhase.INJECT, 5 * IV + 0.3),
                       fault("kill", "backend-1", FaultPhase.HEAL, 5 * IV + 30)]
    return history


# -- exclusivity and liveness --------------------------------------------------------------


def test_steady_history_passes() -> None:
    """One short run per tick, never twice, never overlapping, passes with all counts zero."""
    result = exclusivity(steady())
    assert result.verdict is Verdict.PASS, result
    values = dict(result.values)
    assert values["overlaps"] == values["duplicate_ticks"] == values["missed_ticks"] == 0
    assert values["runs"] == 21 and values["judged_ticks"] == 21 - 4


def test_both_jobs_are_judged_separately() -> None:
    """Runs of two jobs at the same time are not an overlap; a missed tick of one job fails."""
    both = steady(jobs=(JOB, OTHER))
    assert check_lock_exclusivity(both, job_interval_s=IV, lock_ttl_s=TTL).verdict is Verdict.PASS
    both.job_runs = [r for r in both.job_runs if not (r.job == OTHER and r.tick == TICK0 + 9)]
    result = check_lock_exclusivity(both, job_interval_s=IV, lock_ttl_s=TTL)
    assert result.verdict is Verdict.FAIL
    assert any(d.startswith(f"{OTHER}: tick {TICK0 + 9}") for d in result.details)


def test_overlap_fails_naming_both_runs() -> None:
    """A run still going when the next one starts is an overlap, named with nodes and tokens."""
    history = steady()
    history.job_runs[7] = replace(history.job_runs[7],
                                  finished_at=history.job_runs[7].started_at + 2.5)
    result = exclusivity(history)
    assert result.verdict is Verdict.FAIL
    assert dict(result.values)["overlaps"] == 1
    (detail,) = result.details
    assert f"{JOB}: overlap: backend-2 (run 8, tick {TICK0 + 7}, token {TOKEN0 + 8})" in detail
    assert f"backend-3 (run 9, tick {TICK0 + 8}, token {TOKEN0 + 9})" in detail


def test_duplicate_tick_fails() -> None:
    """Two runs of one tick fail even when they do not overlap in time."""
    history = steady()
    history.job_runs.append(run(99, 7, "backend-3", at=0.8))
    result = exclusivity(history)
    assert result.verdict is Verdict.FAIL
    values = dict(result.values)
    assert values["duplicate_ticks"] == 1 and values["overlaps"] == 0
    assert any(f"tick {TICK0 + 7} ran 2 times" in d and "backend-3 (run 99" in d
               for d in result.details)


def test_missed_tick_fails() -> None:
    """A tick in the middle of a healthy stretch that nobody ran fails liveness."""
    result = exclusivity(steady(skip=(9,)))
    assert result.verdict is Verdict.FAIL
    assert dict(result.values)["missed_ticks"] == 1
    assert result.details == (f"{JOB}: tick {TICK0 + 9} (scheduled +18.000 s) did not run",)


def test_slack_ticks_at_the_window_edges_are_excused() -> None:
    """The first and last two ticks of the observed window may be missing."""
    assert exclusivity(steady(skip=(0, 1, 19, 20))).verdict is Verdict.PASS
    assert exclusivity(steady(skip=(0, 1, 2))).verdict is Verdict.FAIL
    assert exclusivity(steady(skip=(0, 1, 2)), liveness_slack_ticks=3).verdict is Verdict.PASS


def test_ticks_during_a_redis_outage_are_excused() -> None:
    """No run while Redis was down (and just around it) passes;
    the same gap without the fault fails."""
    history = steady(skip=tuple(range(6, 12)))
    assert exclusivity(history).verdict is Verdict.FAIL
    history.faults += [fault("kill", "redis", FaultPhase.INJECT, 7 * IV + 1),
                       fault("kill", "redis", FaultPhase.HEAL, 9 * IV + 1)]
    result = exclusivity(history)
    assert result.verdict is Verdict.PASS, result
    assert "minus those in an outage of redis" in result.derivation


def test_ticks_after_a_frozen_holder_are_excused_up_to_the_ttl() -> None:
    """A frozen holder excuses ceil(ttl / interval) ticks after the freeze, not one more."""
    history = steady(skip=tuple(range(6, 11)))
    history.faults += [fault("freeze", "backend-3", FaultPhase.INJECT, 5 * IV + 0.2),
                       fault("freeze", "backend-3", FaultPhase.HEAL, 5 * IV + 30)]
    result = exclusivity(history)
    assert result.verdict is Verdict.PASS, result
    assert "ceil(10 / 2) = 5 ticks" in result.derivation
    history.job_runs = [r for r in history.job_runs if r.tick != TICK0 + 11]
    result = exclusivity(history)
    assert result.verdict is Verdict.FAIL
    assert dict(result.values)["missed_ticks"] == 1


def test_fault_on_a_node_holding_no_lock_excuses_nothing() -> None:
    """Killing a node between its runs does not excuse the following ticks."""
    history = steady(skip=(8,))
    history.faults.append(fault("kill", "backend-1", FaultPhase.INJECT, 6 * IV + 1.0))
    assert exclusivity(history).verdict is Verdict.FAIL


def test_killed_holder_unknown_run_overlapping_the_next_fails() -> None:
    """An unfinished run whose node died only after the next run started possibly overlaps it."""
    history = steady(skip=(5,))
    history.job_runs.append(run(500, 5, "backend-1", duration=None))
    history.faults.append(fault("kill", "backend-1", FaultPhase.INJECT, 6 * IV + 0.5))
    result = exclusivity(history)
    assert result.verdict is Verdict.FAIL
    values = dict(result.values)
    assert values["unknown_runs"] == 1 and values["possible_overlaps"] == 1
    (detail,) = result.details
    assert "possible overlap: backend-1 (run 500" in detail
    assert "outcome unknown, may have run until +12.500 s (kill of backend-1 done" in detail
    assert "backend-1 (run 7, tick" in detail


def test_killed_holder_taken_over_after_the_lease_passes() -> None:
    """A killed holder's unknown run ends at the kill; the next run after its
    lease does not overlap."""
    history = killed_holder(next_at_tick=11)
    result = exclusivity(history)
    assert result.verdict is Verdict.PASS, result
    assert dict(result.values)["unknown_runs"] == 1


def test_unknown_run_without_a_death_has_no_end() -> None:
    """An unfinished run on a node never killed may still be running: every later run overlaps."""
    history = steady(skip=(15,))
    history.job_runs.append(run(500, 15, "backend-1", duration=None, outcome="running"))
    result = exclusivity(history)
    assert result.verdict is Verdict.FAIL
    assert dict(result.values)["possible_overlaps"] == 5
    assert "(no bound)" in result.details[0]
    bounded = exclusivity(history, max_run_s=4.5)
    assert bounded.verdict is Verdict.FAIL
    assert dict(bounded.values)["possible_overlaps"] == 2
    assert exclusivity(history, max_run_s=1.5).verdict is Verdict.PASS


def test_frozen_time_extends_the_live_bound() -> None:
    """With max_run_s, a run whose node was frozen may last that much longer."""
    history = steady(skip=tuple(range(5, 12)))
    history.job_runs.append(run(500, 5, "backend-1", duration=None))
    history.faults += [fault("freeze", "backend-1", FaultPhase.INJECT, 5 * IV + 0.2),
                       fault("freeze", "backend-1", FaultPhase.HEAL, 5 * IV + 15.2)]
    overlaps = find_overlaps(history, (JOB,), max_run_s=1.5)
    # Frozen from +10.15 to +25.2 after starting at +10.01: may run until +25.2 + 1.36.
    assert [o.second.run.tick - TICK0 for o in overlaps] == [12, 13]
    assert all(o.first.run.id == 500 and not o.certain for o in overlaps)
    assert abs(overlaps[0].first.end - (T0 + 5 * IV + 15.2 + 1.36)) < 1e-6


# -- fencing --------------------------------------------------------------------------------


def test_fencing_contains_the_frozen_holder() -> None:
    """A frozen holder whose stale write was rejected: exclusivity fails, fencing passes."""
    history = frozen_holder(fenced=True)
    assert exclusivity(history).verdict is Verdict.FAIL
    result = check_fencing(history)
    assert result.verdict is Verdict.PASS, result
    # It resumed at +25.2 and overlapped the runs of ticks 11 and 12.
    assert dict(result.values)["contained"] == 2
    assert all("overlap contained by fencing: backend-1's write with token 1005 was rejected"
               in d for d in result.details)


def test_fencing_off_conforms_and_shows_the_overlap() -> None:
    """The same race without a rejection is what a backend without fencing does: it conforms
    to that configuration, shows both runs, and fails against a claim that fencing is on."""
    history = frozen_holder(fenced=False)
    result = check_fencing(history, fencing_expected=False)
    assert result.verdict is Verdict.PASS
    detail = result.details[0]
    assert len(result.details) == 2
    assert "overlap: backend-1 (run 500" in detail and "backend-2 (run 611" in detail
    assert "stale write with token 1005 was not rejected (ok)" in detail
    assert "fencing off" in result.derivation
    assert dict(result.values)["uncontained"] == dict(result.values)["overlaps"] >= 1
    assert check_fencing(history, fencing_expected=True).verdict is Verdict.FAIL


def test_fencing_off_with_a_rejection_fails() -> None:
    """A refusal recorded while fencing is off means the backend fences after all."""
    result = check_fencing(frozen_holder(fenced=True), fencing_expected=False)
    assert result.verdict is Verdict.FAIL
    assert "although fencing is off" in result.details[0]


def test_fencing_with_inverted_or_missing_tokens_fails() -> None:
    """A later-started run with the lower token, or a run without one, is not contained."""
    history = frozen_holder(fenced=True)
    history.job_runs[-1] = replace(history.job_runs[-1], fencing_token=TOKEN0 + 1)
    assert "lower token" in check_fencing(history).details[0]
    history.job_runs[-1] = replace(history.job_runs[-1], fencing_token=None)
    assert check_fencing(history).verdict is Verdict.FAIL


def test_fencing_unknown_stale_outcome_is_not_contained() -> None:
    """A possibly-overlapping killed run with no recorded rejection may have written."""
    history = steady(skip=(5,))
    history.job_runs.append(run(500, 5, "backend-1", token=TOKEN0 + 5, duration=None))
    history.faults.append(fault("kill", "backend-1", FaultPhase.INJECT, 6 * IV + 0.5))
    result = check_fencing(history)
    assert result.verdict is Verdict.FAIL
    assert "outcome is unknown" in result.details[0]


def test_fencing_without_overlap_is_unknown() -> None:
    """No overlap means the scenario did not create the race: nothing to judge."""
    assert check_fencing(steady()).verdict is Verdict.UNKNOWN


# -- takeover -------------------------------------------------------------------------------


def test_takeover_within_the_bound_passes() -> None:
    """The next run after a killed holder within ttl + interval + the recording time the runs
    before the kill show (10 ms here) passes."""
    result = check_lock_takeover(killed_holder(next_at_tick=11), target_node="backend-1",
                                 lock_ttl_s=TTL, job_interval_s=IV)
    assert result.verdict is Verdict.PASS, result
    values = dict(result.values)
    assert abs(values["bound_s"] - (TTL + IV + 0.01)) < 1e-6
    assert "the longest a winner took from its tick to its recorded start" in result.derivation
    assert abs(values["measured_s"] - (6 * IV + 0.01 - 0.3)) < 1e-6
    assert "next run by backend-3 (run" in result.details[0]


def test_takeover_too_slow_fails() -> None:
    """A next run later than the bound fails, with the measured delay."""
    result = check_lock_takeover(killed_holder(next_at_tick=13), target_node="backend-1",
                                 lock_ttl_s=TTL, job_interval_s=IV)
    assert result.verdict is Verdict.FAIL
    assert "(too late)" in result.details[0]


def test_takeover_overlapping_the_killed_run_fails() -> None:
    """A next run that started before the kill completed may overlap the killed run."""
    history = steady(skip=(5,))
    history.job_runs.append(run(500, 5, "backend-1", duration=None))
    history.faults.append(fault("kill", "backend-1", FaultPhase.INJECT, 6 * IV + 0.5))
    result = check_lock_takeover(history, target_node="backend-1", lock_ttl_s=TTL,
                                 job_interval_s=IV)
    assert result.verdict is Verdict.FAIL
    assert "possible overlap with the killed run" in result.details[0]


def test_takeover_needs_a_kill_that_hit_a_run() -> None:
    """No kill, or a kill between the target's runs, cannot be judged."""
    history = steady()
    assert check_lock_takeover(history, target_node="backend-1", lock_ttl_s=TTL,
                               job_interval_s=IV).verdict is Verdict.UNKNOWN
    history.faults.append(fault("kill", "backend-1", FaultPhase.INJECT, 6 * IV + 1.0))
    result = check_lock_takeover(history, target_node="backend-1", lock_ttl_s=TTL,
                                 job_interval_s=IV)
    assert result.verdict is Verdict.UNKNOWN
    assert "hit one of its runs" in result.measured


# -- pause while Redis is down ---------------------------------------------------------------


def redis_outage(history: History) -> History:
    """Redis frozen from +11 s to +19 s."""
    history.faults += [fault("freeze", "redis", FaultPhase.INJECT, 11.0),
                       fault("freeze", "redis", FaultPhase.HEAL, 19.0)]
    return history


def test_jobs_paused_while_redis_down_passes() -> None:
    """No run starting between the inject (plus grace) and the heal passes."""
    result = check_jobs_paused_while_redis_down(redis_outage(steady(skip=(6, 7, 8, 9))), IV)
    assert result.verdict is Verdict.PASS, result
    assert dict(result.values)["ticks_in_outages"] == 4


def test_run_during_redis_outage_fails() -> None:
    """Runs that went on while Redis was frozen (no lock possible) fail, each named."""
    result = check_jobs_paused_while_redis_down(redis_outage(steady()), IV)
    assert result.verdict is Verdict.FAIL
    assert dict(result.values)["runs_during_outage"] == 4
    assert "backend-1 (run 7, tick" in result.details[0]
    assert "while redis was down (freeze from +11.000 s to +18.950 s)" in result.details[0]


def test_run_recorded_within_the_grace_passes() -> None:
    """A run that took its lock just before the fault and recorded itself just after is allowed."""
    history = redis_outage(steady(skip=(6, 7, 8, 9)))
    history.job_runs.append(run(99, 5, "backend-2", at=1.2))
    assert check_jobs_paused_while_redis_down(history, IV).verdict is Verdict.PASS


def test_no_redis_outage_is_unknown() -> None:
    """Without an outage of Redis (a latency fault is none) there is nothing to judge."""
    history = steady()
    history.faults.append(fault("latency", "redis", FaultPhase.INJECT, 5.0))
    assert check_jobs_paused_while_redis_down(history, IV).verdict is Verdict.UNKNOWN
