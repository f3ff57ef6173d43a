"""Job locks and the lock store: no run without Redis, the holder Redis names is the node
running the job, and a Redis restart loses the lock exactly when its persistence says.

The backends' records (``JobRun``) against what Redis itself showed: its outages (faults whose
effect is an ``outage``), its lock keys sampled all along the steps (``LockSample``), and its
restarts. The model and the spans of the runs are those of ``lab.checks.locks`` and
``lab.checks.lock_spans``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace

from lab.checks.base import CheckResult, Verdict
from lab.checks.lock_spans import (
    JOBS,
    REDIS,
    Clock,
    RunSpan,
    describe,
    fault_windows,
    run_span,
)
from lab.checks.registry import CheckContext, CheckDef, NoParams, Observation, register
from lab.contract import REFERENCE_LOCK_PREFIX
from lab.history import FaultEvent, History, JobRun, LockSample, ready_mark

PAUSED = "jobs-paused"
HOLDERS = "lock-holders"
STORE_RESTART = "lock-after-store-restart"
EVICTION = "lock-after-eviction"


def check_jobs_paused_while_redis_down(history: History, job_interval_s: float, *,
                                       grace_s: float = 0.5, jobs: tuple[str, ...] = JOBS,
                                       redis: str = REDIS) -> CheckResult:
    """No run started while Redis could not be reached: such a run would hold no lock."""
    t = Clock(history)
    derivation = (
        f"a run starts only after SET NX on Redis succeeded, so none may start from an "
        f"outage of {redis} (a fault that leaves it answering nothing until its heal: its "
        f"process ended, frozen or cut off; inject done + grace {grace_s:g} s: a run that "
        "took its lock just before records its start just after) until its heal is issued; "
        f"a tick every job_interval = {job_interval_s:g} s, so an outage of d s holds about "
        f"d / {job_interval_s:g} ticks that must be skipped")
    expected = f"no job run started during an outage of {redis}"
    windows = fault_windows(history, (redis,), lambda effect: effect.outage)
    if not windows:
        return CheckResult(PAUSED, Verdict.UNKNOWN, f"no outage of {redis} in the history",
                           expected, derivation)
    end = history.mark_at("end") or max([r.started_at for r in history.job_runs]
                                        + [f.at for f in history.faults])
    runs = [r for r in history.job_runs if r.job in jobs]
    during: list[str] = []
    ticks = 0
    for inject, heal in windows:
        lo, hi = inject.at + grace_s, (end if heal is None else heal.started_at)
        ticks += max(0, math.ceil(hi / job_interval_s) - math.floor(lo / job_interval_s) - 1)
        during += [f"{r.job}: {r.node} (run {r.id}, tick {r.tick}, token {r.fencing_token}) "
                   f"started at {t(r.started_at)} while {redis} was down ({inject.fault} from "
                   f"{t(inject.at)} to {t(hi)}): a run without the lock"
                   for r in runs if lo < r.started_at < hi]
    values = (("outages", float(len(windows))), ("ticks_in_outages", float(ticks)),
              ("runs_during_outage", float(len(during))))
    if during:
        return CheckResult(PAUSED, Verdict.FAIL, f"{len(during)} runs started while {redis} "
                           "was down", expected, derivation, tuple(during), values)
    if ticks == 0:
        return CheckResult(PAUSED, Verdict.UNKNOWN, f"no tick fell inside the outage of {redis}",
                           expected, derivation, values=values)
    return CheckResult(PAUSED, Verdict.PASS, f"no run started during {len(windows)} outage(s) "
                       f"of {redis} ({ticks} ticks skipped)", expected, derivation, values=values)

@dataclass(frozen=True)
class _HolderEpisode:
    """Consecutive lock samples of one job that showed the same violation."""

    job: str
    redis_holder: str | None
    running: tuple[RunSpan, ...]
    first: LockSample
    last: LockSample
    count: int


def _running_at(spans: list[RunSpan], sample: LockSample) -> tuple[RunSpan, ...]:
    """The runs in progress over the whole sample: Redis answered while each of them ran."""
    return tuple(s for s in spans
                 if s.run.started_at < sample.sent_at and s.end > sample.received_at)


def check_lock_holders(history: History, *, jobs: tuple[str, ...] = JOBS,
                       max_run_s: float | None = None) -> CheckResult:
    """At every sample of the lock store, each job had one holder at most, and a running job's
    node held its lock."""
    t = Clock(history)
    derivation = (
        "a node records a run in job_runs only after SET NX PX gave it the job's lock, and "
        "records its end before it releases the lock; so while a run is in progress over a "
        "whole /admin/locks sample (sent to received: Redis answered somewhere in between), "
        "Redis must name that run's node as the holder, and no other node may run the job "
        "then. An unfinished run may have lasted until its node's kill/stop"
        + ("" if max_run_s is None else f" or max_run_s = {max_run_s:g} s plus frozen time")
        + " (as for exclusivity)")
    expected = ("at every sample, per job: at most one node holds or runs it, and a node running "
                "it is the one Redis names")
    samples = sorted((s for s in history.lock_samples if s.job in jobs), key=lambda s: s.sent_at)
    spans: dict[str, list[RunSpan]] = defaultdict(list)
    for run in history.job_runs:
        if run.job in jobs:
            spans[run.job].append(run_span(run, history.faults, max_run_s))
    episodes: list[_HolderEpisode] = []
    two_holders = unlocked = 0
    for job in jobs:
        current: _HolderEpisode | None = None   # the episode the previous sample continued
        for sample in (s for s in samples if s.job == job):
            running = _running_at(spans[job], sample)
            nodes = ({span.run.node for span in running}
                     | ({sample.holder} if sample.holder else set()))
            if len(nodes) <= 1 and not (running and sample.holder is None):
                current = None
                continue
            two_holders += len(nodes) > 1
            unlocked += len(nodes) <= 1
            if current and current.redis_holder == sample.holder and current.running == running:
                current = episodes[-1] = replace(current, last=sample, count=current.count + 1)
            else:
                current = _HolderEpisode(job, sample.holder, running, sample, sample, 1)
                episodes.append(current)
    values = (("samples", float(len(samples))), ("two_holder_samples", float(two_holders)),
              ("unlocked_run_samples", float(unlocked)), ("episodes", float(len(episodes))))
    if not samples:
        return CheckResult(HOLDERS, Verdict.UNKNOWN, "no lock sample recorded", expected,
                           derivation, values=values)
    details = []
    for e in episodes:
        runs = "; ".join(describe(span, t) for span in e.running)
        named = f"Redis named {e.redis_holder}" if e.redis_holder else "Redis named no holder"
        details.append(f"{e.job}: {t(e.first.sent_at)} to {t(e.last.received_at)} ({e.count} "
                       f"samples): {named} while running: {runs}")
    per_job = len({s.sent_at for s in samples})
    measured = (f"{per_job} samples of {len(jobs)} jobs: {two_holders} showed two holders, "
                f"{unlocked} a run without its lock ({len(episodes)} episodes)")
    return CheckResult(HOLDERS, Verdict.FAIL if episodes else Verdict.PASS, measured, expected,
                       derivation, tuple(details), values)

@dataclass(frozen=True)
class _Loss:
    """One way the lock store loses a held lock: which fault windows, when Redis serves again
    after one, and whether a held job's lock is gone (None: cannot be told)."""

    check: str
    windows: list[tuple[FaultEvent, FaultEvent | None]]
    back: Callable[[FaultEvent, FaultEvent | None], float]
    lost: Callable[[FaultEvent, JobRun], bool]
    what: str                   # "restart", "eviction": for the measured sentence


def _second_runs(history: History, loss: _Loss, *, job_interval_s: float,
                 jobs: tuple[str, ...], redis: str, margin_s: float,
                 expected: str, derivation: str) -> CheckResult:
    """For each run held across a loss: a second run starts iff the lock is gone and a tick
    falls between Redis serving again and the holder's end (less ``margin_s``), with a rising
    token."""
    t = Clock(history)
    runs = sorted((r for r in history.job_runs if r.job in jobs),
                  key=lambda r: (r.started_at, r.id))
    details: list[str] = []
    verdicts: list[Verdict] = []
    values: list[tuple[str, float]] = []
    for inject, heal in loss.windows:
        back = loss.back(inject, heal)
        # Held across the fault: recorded before it was done (a holder records its run a few
        # ms after taking the lock, which may be after the fault was issued; a run on a
        # restarted Redis cannot start before it has loaded) and still running when issued.
        for held in (r for r in runs if r.started_at < inject.at
                     and (r.finished_at is None or r.finished_at > inject.started_at)):
            if held.finished_at is None:
                verdicts.append(Verdict.UNKNOWN)
                details.append(f"{held.job}: the holder's run {held.id} never finished: its end, "
                               "and so the prediction, is unknown")
                continue
            end = held.finished_at
            first_tick = math.ceil(back / job_interval_s) * job_interval_s
            window_s = end - margin_s - first_tick
            gone = loss.lost(inject, held)
            predicted = gone and window_s > 0
            undecided = gone and abs(window_s) <= margin_s
            second = next((r for r in runs if r.job == held.job and r.id != held.id
                           and inject.started_at < r.started_at < end), None)
            head = (f"{held.job}: {redis} {inject.fault} at {t(inject.at)}, serving {t(back)}, "
                    f"while {held.node} ran it (run {held.id}, tick {held.tick}, token "
                    f"{held.fencing_token}, until {t(end)} [{held.outcome}]); its lock "
                    f"{'lost' if gone else 'kept'}; first tick after {t(first_tick)}")
            if second is None:
                details.append(f"{head}: no second run")
                ok = not predicted
            else:
                overlap = end - second.started_at
                values.append(("overlap_s", overlap))
                rising = (second.fencing_token is not None and held.fencing_token is not None
                          and second.fencing_token > held.fencing_token)
                details.append(
                    f"{head}: second run by {second.node} (run {second.id}, token "
                    f"{second.fencing_token}) at {t(second.started_at)}, {overlap:.3f} s before "
                    f"the first ended; token {'above' if rising else 'NOT above'} the first's"
                    + ("; the stale holder's write was "
                       + ("refused" if held.outcome == "fenced"
                          else "accepted (it came before the newer holder wrote: fencing orders "
                               "writes, it cannot undo the overlap)")
                       if rising else ""))
                ok = predicted and rising
            verdicts.append(Verdict.UNKNOWN if undecided and not ok else
                            Verdict.PASS if ok else Verdict.FAIL)
    if not verdicts:
        return CheckResult(loss.check, Verdict.UNKNOWN, f"the {redis} {loss.what} hit no run in "
                           "progress: no lock was held across it", expected, derivation)
    verdict = (Verdict.FAIL if Verdict.FAIL in verdicts else
               Verdict.UNKNOWN if Verdict.UNKNOWN in verdicts else Verdict.PASS)
    seconds = sum("second run by" in d for d in details)
    measured = (f"{seconds} of {len(verdicts)} held run(s) saw a second run start across the "
                f"{redis} {loss.what}")
    return CheckResult(loss.check, verdict, measured, expected, derivation, tuple(details),
                       tuple(values))


_TOKENS = ("The second run's fencing token must be above the first's (the backends re-seed a "
           "lost counter from Redis' clock), or a stale holder's write would be taken for the "
           "newer one's")


def check_lock_after_store_restart(history: History, *, persistence: bool, job_interval_s: float,
                                   jobs: tuple[str, ...] = JOBS, redis: str = REDIS,
                                   ready_mark: str | None = None,
                                   margin_s: float = 0.3) -> CheckResult:
    """Whether a second run started while a holder ran across a Redis restart, as the
    persistence setting predicts."""
    derivation = (
        ("Redis persists (appendonly yes, save 1 1): a stop writes the data out, so the restarted "
         "Redis still has the lock with its expiry, the holder extends it on, and no other node "
         "may run the job: no second run"
         if persistence else
         "Redis runs without persistence (save \"\", appendonly no): the restarted Redis has "
         "lost the lock, the fencing counter and the tick marker; the holder's next extension "
         "finds no lock, but its run goes on (a lost lease does not stop a process), and the "
         "other nodes take the lock at the first tick after Redis is back: a second run starts "
         "if such a tick (k * job_interval) falls between Redis ready and the holder's end "
         f"(less a margin of {margin_s:g} s for taking the lock and recording the run)")
        + f"; job_interval = {job_interval_s:g} s. " + _TOKENS)
    expected = "a second run during the holder's run" if not persistence else "no second run"
    restarts = fault_windows(history, (redis,), lambda effect: effect.ends)
    if not restarts:
        return CheckResult(STORE_RESTART, Verdict.UNKNOWN, f"{redis} was not restarted", expected,
                           derivation)
    ready = history.mark_at(ready_mark) if ready_mark else None
    loss = _Loss(STORE_RESTART, restarts,
                 back=lambda inject, heal: ready or (heal.at if heal else inject.at),
                 lost=lambda inject, held: not persistence, what="restart")
    return _second_runs(history, loss, job_interval_s=job_interval_s, jobs=jobs, redis=redis,
                        margin_s=margin_s, expected=expected, derivation=derivation)


def check_lock_after_eviction(history: History, *, job_interval_s: float,
                              jobs: tuple[str, ...] = JOBS, redis: str = REDIS,
                              lock_key: str = REFERENCE_LOCK_PREFIX + "{job}",
                              locking: bool = True, margin_s: float = 0.3) -> CheckResult:
    """Whether a second run started while a holder ran across an eviction of its lock key,
    exactly when the eviction removed that key and a tick came before the holder's end."""
    derivation = (
        "an eviction removes keys at once and Redis serves on; a holder whose lock key "
        f"({lock_key or 'not named by the contract'}) was among them is not told: its next "
        "extension finds no lock, "
        "but its run goes on (a lost lease does not stop a process), and the other nodes take "
        "the free lock at the next tick: a second run starts if a tick (k * job_interval) "
        "falls between the eviction and the holder's end (less a margin of "
        f"{margin_s:g} s for taking the lock and recording the run); a run whose key was not "
        f"evicted keeps its lock and sees none; job_interval = {job_interval_s:g} s. "
        + _TOKENS)
    expected = ("a second run during the holder's run exactly when its lock key was evicted and "
                "a tick came before its end")
    if not locking:
        return CheckResult(EVICTION, Verdict.UNKNOWN, "locking is off (LAB_LOCKING=0): every "
                           "node runs every tick, there is no lock to evict", expected, derivation)
    if not lock_key:
        return CheckResult(EVICTION, Verdict.UNKNOWN, "the backend's contract names no lock key "
                           "([backend.contract.locks] key): whether an eviction took a lock "
                           "cannot be told", expected, derivation)
    evictions = fault_windows(history, (redis,), lambda effect: effect.forgets)
    if not evictions:
        return CheckResult(EVICTION, Verdict.UNKNOWN, f"no key of {redis} was evicted", expected,
                           derivation)
    loss = _Loss(EVICTION, evictions, back=lambda inject, heal: inject.at,
                 lost=lambda inject, held: lock_key.replace("{job}", held.job) in inject.lost_keys,
                 what="eviction")
    return _second_runs(history, loss, job_interval_s=job_interval_s, jobs=jobs, redis=redis,
                        margin_s=margin_s, expected=expected, derivation=derivation)

# -- registration -------------------------------------------------------------------------------


def _paused(ctx: CheckContext, params: NoParams) -> CheckResult:
    ctx.observation(Observation.JOB_RECORDS)
    backend = ctx.expectations.backend
    return check_jobs_paused_while_redis_down(ctx.history, backend.job_interval_s,
                                              jobs=backend.jobs)


register(CheckDef(
    name=PAUSED, params=NoParams, judge=_paused,
    summary="no job run starts while Redis (the lock store) is down",
    needs=frozenset({Observation.JOB_RECORDS})))

def _holders(ctx: CheckContext, params: NoParams) -> CheckResult:
    ctx.observation(Observation.JOB_RECORDS)
    ctx.observation(Observation.LOCK_SAMPLES)
    backend = ctx.expectations.backend
    return check_lock_holders(ctx.history, max_run_s=backend.max_run_s, jobs=backend.jobs)


register(CheckDef(
    name=HOLDERS, params=NoParams, judge=_holders,
    summary="at every sample of Redis's lock keys, one holder per job, and it is the node "
            "running it",
    needs=frozenset({Observation.JOB_RECORDS, Observation.LOCK_SAMPLES})))

def _store_restart(ctx: CheckContext, params: NoParams) -> CheckResult:
    ctx.observation(Observation.JOB_RECORDS)
    backend = ctx.expectations.backend
    return check_lock_after_store_restart(ctx.history,
                                          persistence=ctx.expectations.redis.persistence,
                                          job_interval_s=backend.job_interval_s,
                                          ready_mark=ready_mark(REDIS), jobs=backend.jobs)


register(CheckDef(
    name=STORE_RESTART, params=NoParams, judge=_store_restart,
    summary="a second run starts across a Redis restart exactly when Redis's persistence setting "
            "says the lock is lost",
    needs=frozenset({Observation.JOB_RECORDS})))

def _eviction(ctx: CheckContext, params: NoParams) -> CheckResult:
    ctx.observation(Observation.JOB_RECORDS)
    backend = ctx.expectations.backend
    return check_lock_after_eviction(ctx.history, job_interval_s=backend.job_interval_s,
                                     jobs=backend.jobs, lock_key=backend.lock_key,
                                     locking=backend.locking)


register(CheckDef(
    name=EVICTION, params=NoParams, judge=_eviction,
    summary="a second run starts across an eviction of Redis keys exactly when the holder's lock "
            "key was evicted and a tick came before its end",
    needs=frozenset({Observation.JOB_RECORDS})))
