"""Job locks between the nodes: were the scheduled jobs mutually exclusive and live, was every
overlap fenced, and did another node take over from a killed holder?

The records are the backends' own (``JobRun``, ``FencingRejection``, read from PostgreSQL by
``lab.workload.jobs``) and the fault events. The model, from ``images/backend``: every node
wakes at the start of tick ``k`` (scheduled time ``k * job_interval``); the one that takes
the job's Redis lock (``SET NX PX lock_ttl``, extended every TTL/3 while the run lasts)
claims the tick, records the run, works, and writes the fenced side effect. A lease is not
mutual exclusion: a holder frozen past the TTL resumes and writes anyway, and only the
fencing token keeps that stale write out (docs/semantics.md §4).

When a run may have executed (an unfinished one included) is ``lab.checks.lock_spans``; the
checks of the lock store itself (Redis down, sampled, restarted) are ``lab.checks.locks_store``.
"""

from __future__ import annotations

import math
from collections import defaultdict

from lab.checks.base import CheckResult, ObjectiveResult, Prediction, Verdict
from lab.checks.lock_spans import (
    JOBS,
    REDIS,
    Clock,
    describe,
    describe_overlap,
    fault_windows,
    find_overlaps,
    run_span,
)
from lab.checks.registry import (
    After,
    CheckContext,
    CheckDef,
    CheckParams,
    NoParams,
    ObjectiveHook,
    Observation,
    TimelineMark,
    measured_objective,
    register,
)
from lab.history import FaultPhase, History, JobRun
from lab.objectives import Objectives, text_seconds, threshold_text

EXCLUSIVITY = "lock-exclusivity"
FENCING = "fencing"
TAKEOVER = "lock-takeover"


def check_lock_exclusivity(history: History, *, job_interval_s: float, lock_ttl_s: float,
                           jobs: tuple[str, ...] = JOBS, liveness_slack_ticks: int = 2,
                           window: tuple[float, float] | None = None,
                           outage_targets: tuple[str, ...] = (REDIS,),
                           max_run_s: float | None = None) -> CheckResult:
    """No two runs of a job overlap, no tick runs twice, and every tick with Redis up runs."""
    t = Clock(history)
    runs = [r for r in history.job_runs if r.job in jobs]
    unknown = [r for r in runs if r.finished_at is None]
    overlaps = find_overlaps(history, jobs, max_run_s)
    per_tick: dict[tuple[str, int], list[JobRun]] = defaultdict(list)
    for run in runs:
        per_tick[(run.job, run.tick)].append(run)
    duplicates = {key: group for key, group in sorted(per_tick.items()) if len(group) > 1}

    ws, we = window or _observation(history, runs)
    judged, liveness_derivation = _judged_ticks(history, runs, jobs, job_interval_s, lock_ttl_s,
                                                liveness_slack_ticks, (ws, we), outage_targets,
                                                max_run_s)
    missed = [(job, k) for job in jobs for k in judged[job] if (job, k) not in per_tick]

    derivation = (
        "exclusivity: a run occupies [started_at, finished_at]; an unfinished run (outcome "
        "unknown) may have run until its node's kill/stop completed, and without one, with no "
        "bound"
        + ("" if max_run_s is None else f" beyond max_run_s = {max_run_s:g} s plus frozen time")
        + "; two runs of one job overlap when the later one started before the earlier one "
        "(possibly) ended. ticks: the lock winner claims its tick in Redis, so one run per "
        "(job, tick). " + liveness_derivation)
    expected = ("no overlapping runs of a job, each tick run at most once, every judged tick "
                f"run at least once ({', '.join(jobs)})")
    details = [describe_overlap(o, t) for o in overlaps]
    details += [f"{job}: tick {tick} ran {len(group)} times: "
                + "; ".join(describe(run_span(r, history.faults, max_run_s), t) for r in group)
                for (job, tick), group in duplicates.items()]
    details += [f"{job}: tick {k} (scheduled {t(k * job_interval_s)}) did not run"
                for job, k in missed]
    possible = sum(not o.certain for o in overlaps)
    judged_count = sum(len(ticks) for ticks in judged.values())
    values = (("runs", float(len(runs))), ("overlaps", float(len(overlaps))),
              ("possible_overlaps", float(possible)), ("duplicate_ticks", float(len(duplicates))),
              ("missed_ticks", float(len(missed))), ("unknown_runs", float(len(unknown))),
              ("judged_ticks", float(judged_count)))
    if not runs:
        if judged_count:
            # Ticks with the lock store up were due and no backend ran one: the job never ran.
            return CheckResult(EXCLUSIVITY, Verdict.FAIL, f"no job run recorded in {judged_count} "
                               "judged ticks: no backend ever took the job", expected, derivation,
                               tuple(details[:20]), values)
        return CheckResult(EXCLUSIVITY, Verdict.UNKNOWN, "no job runs recorded, and no tick was "
                           "due with the lock store up", expected, derivation, values=values)
    measured = (f"{len(runs)} runs ({len(unknown)} unknown): {len(overlaps)} overlaps "
                f"({possible} possible), {len(duplicates)} ticks run twice, {len(missed)} of "
                f"{judged_count} judged ticks missed")
    failed = overlaps or duplicates or missed
    return CheckResult(EXCLUSIVITY, Verdict.FAIL if failed else Verdict.PASS, measured, expected,
                       derivation, tuple(details), values)


def _observation(history: History, runs: list[JobRun]) -> tuple[float, float]:
    """The observed stretch: the run's start and end marks, else the first and last run."""
    starts = [r.started_at for r in runs] or [0.0]
    start = history.mark_at("start")
    end = history.mark_at("end")
    return (min(starts) if start is None else start, max(starts) if end is None else end)


def _judged_ticks(history: History, runs: list[JobRun], jobs: tuple[str, ...],
                  interval: float, ttl: float, slack: int, window: tuple[float, float],
                  outage_targets: tuple[str, ...],
                  max_run_s: float | None) -> tuple[dict[str, list[int]], str]:
    """Per job, the ticks that must have run; and how they were chosen."""
    ws, we = window
    first, last = math.ceil(ws / interval), math.floor(we / interval)
    outages = [(inject.started_at, math.inf if heal is None else heal.at)
               for inject, heal in fault_windows(history, outage_targets)]

    def down(k: int) -> bool:
        return any(lo <= k * interval <= hi for lo, hi in outages)

    # Stretches of consecutive ticks with the lock store up; each loses `slack` at both ends.
    stretches: list[list[int]] = [[]]
    for k in range(first, last + 1):
        if down(k):
            if stretches[-1]:
                stretches.append([])
        else:
            stretches[-1].append(k)
    reachable = [k for s in stretches for k in (s[slack:len(s) - slack] if slack else s)]

    ticks_after_fault = math.ceil(ttl / interval)
    nodes = {r.node for r in runs}
    spans = [run_span(r, history.faults, max_run_s) for r in runs]
    ran_ticks = {(r.job, r.tick) for r in runs}
    judged: dict[str, list[int]] = {}
    for job in jobs:
        excused: set[int] = set()
        for fault in history.faults:
            if fault.phase is not FaultPhase.INJECT or fault.target not in nodes:
                continue
            k0 = math.floor(fault.started_at / interval)
            held = any(s.run.job == job and s.run.node == fault.target
                       and s.run.started_at <= fault.at and s.end >= fault.started_at
                       for s in spans)
            # A holder hit between taking the lock and recording its run leaves its tick empty.
            if held or (job, k0) not in ran_ticks:
                excused.update(k for k in range(k0, last + 1)
                               if k * interval < fault.at + ttl)
        judged[job] = [k for k in reachable if k not in excused]
    derivation = (
        f"liveness: ticks k with k * job_interval inside the {we - ws:.3f} s observed (start "
        f"to end mark; job_interval = {interval:g} s: ticks {first}..{last}, "
        f"{max(0, last - first + 1)}), "
        f"minus those in an outage of {', '.join(outage_targets)} [inject issued, heal done] "
        f"(no lock can be taken), minus the first and last {slack} of each stretch in between "
        "(startup, reconnecting, a fault taking effect), minus, per job, the ticks from the one "
        f"during which a node holding that job's lock was faulted until fault + lock_ttl "
        f"(= {ttl:g} s, up to ceil({ttl:g} / {interval:g}) = {ticks_after_fault} ticks after it: "
        "a dead, frozen or cut-off holder neither releases nor extends, so others wait for the "
        "lease to run out); a node counts as the holder when its run was in progress, or when "
        "the fault's tick has no run at all (hit before recording it)")
    return judged, derivation


def check_fencing(history: History, *, fencing_expected: bool = True,
                  jobs: tuple[str, ...] = JOBS, max_run_s: float | None = None) -> CheckResult:
    """Every overlap was contained: the later run had the higher token, the stale write was
    rejected."""
    t = Clock(history)
    overlaps = find_overlaps(history, jobs, max_run_s)
    rejected = {(r.job, r.node, r.token) for r in history.fencing_rejections}
    expected = ("every overlap contained: the later-started run has the higher token and the "
                "earlier (stale) run's write is rejected" if fencing_expected else
                "no write rejected (fencing off): a stale holder's write lands")
    derivation = (
        "fencing on (LAB_FENCING=1): each lock acquisition INCRs the job's token, and the "
        "resource rejects a token not above the last it accepted, recording the refusal in "
        "fencing_rejections; so when a stale holder overlaps the next one, its write must "
        "appear there with its job, node and token"
        if fencing_expected else
        "fencing off (LAB_FENCING=0, a negative control): the resource believes whoever writes "
        "last, so no write is rejected and any overlap this scenario creates stays uncontained")
    if not overlaps:
        return CheckResult(FENCING, Verdict.UNKNOWN, "no overlapping runs: the scenario did not "
                           "create the race fencing guards against", expected, derivation,
                           values=(("overlaps", 0.0), ("contained", 0.0), ("uncontained", 0.0)))
    contained: list[str] = []
    uncontained: list[str] = []
    for overlap in overlaps:
        stale, later = overlap.first.run, overlap.second.run
        what = describe_overlap(overlap, t)
        if stale.fencing_token is None or later.fencing_token is None:
            uncontained.append(f"{what}: not fenced: a run without a fencing token (no lock)")
        elif later.fencing_token <= stale.fencing_token:
            uncontained.append(f"{what}: not fenced: the later-started run has the lower token "
                               "(did Redis lose its counter?)")
        elif (stale.job, stale.node, stale.fencing_token) in rejected:
            contained.append(f"{what}: overlap contained by fencing: {stale.node}'s write with "
                             f"token {stale.fencing_token} was rejected")
        elif not overlap.first.known:
            uncontained.append(f"{what}: not fenced: the stale run's outcome is unknown and no "
                               f"rejection of token {stale.fencing_token} was recorded, so its "
                               "write may have been applied")
        else:
            uncontained.append(f"{what}: not fenced: the stale write with token "
                               f"{stale.fencing_token} was not rejected ({stale.outcome})")
    values = (("overlaps", float(len(overlaps))), ("contained", float(len(contained))),
              ("uncontained", float(len(overlaps) - len(contained))),
              ("rejections", float(len(history.fencing_rejections))))
    measured = f"{len(contained)} of {len(overlaps)} overlaps contained by fencing"
    if fencing_expected:
        verdict = Verdict.FAIL if uncontained else Verdict.PASS
    else:
        # Without fencing nothing may be refused; the stale writes landing is what that
        # configuration does (the duplicate_job_runs objective judges whether it is acceptable).
        verdict = Verdict.FAIL if history.fencing_rejections else Verdict.PASS
        if history.fencing_rejections:
            uncontained.insert(0, f"{len(history.fencing_rejections)} fencing rejections recorded "
                               "although fencing is off")
    return CheckResult(FENCING, verdict, measured, expected, derivation,
                       tuple(uncontained + contained), values)

def check_lock_takeover(history: History, *, target_node: str, lock_ttl_s: float,
                        job_interval_s: float, jobs: tuple[str, ...] = JOBS) -> CheckResult:
    """After ``target_node`` is killed mid-run, the job's next run comes within the bound,
    without overlap."""
    t = Clock(history)
    # Ticks are wall-clock aligned (tick * interval): how long a winner takes from its tick to
    # its recorded start (taking the lock, claiming the tick, writing the row) is measured on
    # the runs before the kill, not assumed. A kill is a fault that ends the process abruptly:
    # a holder stopped with SIGTERM may release its lock itself, which is not what this judges.
    first_kill = min((e.started_at for e in history.faults if e.phase is FaultPhase.INJECT
                      and e.effect.ends_abruptly and e.target == target_node),
                     default=math.inf)
    recording = max((r.started_at - r.tick * job_interval_s for r in history.job_runs
                      if r.job in jobs and r.started_at < first_kill
                      and r.started_at >= r.tick * job_interval_s), default=0.0)
    bound = lock_ttl_s + job_interval_s + recording
    derivation = (
        f"the killed holder's last lease extension was before its death, so its lock expires by "
        f"kill + lock_ttl; the other nodes try at every tick, so the next run starts by kill + "
        f"lock_ttl + job_interval + the longest a winner took from its tick to its recorded "
        f"start before the kill = {lock_ttl_s:g} + {job_interval_s:g} + {recording:.3f} = "
        f"{bound:.3f} s; the killed run may have run until the kill completed, so the next run "
        "must start after that")
    expected = (f"next run of each job {target_node} held within {bound:.3f} s of the kill, no "
                "overlap")
    kills = sorted((e for e in history.faults if e.phase is FaultPhase.INJECT
                    and e.effect.ends_abruptly and e.target == target_node), key=lambda e: e.at)
    if not kills:
        return CheckResult(TAKEOVER, Verdict.UNKNOWN, f"{target_node} was not killed", expected,
                           derivation, values=(("bound_s", bound),))
    runs = sorted((r for r in history.job_runs if r.job in jobs),
                  key=lambda r: (r.started_at, r.id))
    kill, hit = kills[0], []
    for kill in kills:
        hit = [span for span in (run_span(r, history.faults) for r in runs)
               if span.run.node == target_node and span.run.started_at <= kill.at
               and span.end >= kill.started_at]
        if hit:
            break
    if not hit:
        return CheckResult(TAKEOVER, Verdict.UNKNOWN, f"no kill of {target_node} hit one of its "
                           "runs: it held no lock to take over", expected, derivation,
                           values=(("bound_s", bound),))
    starts = [r.started_at for r in runs]
    horizon = history.mark_at("end") or max(starts + [f.at for f in history.faults])
    details: list[str] = []
    verdicts: list[Verdict] = []
    worst = 0.0
    untaken = 0.0       # the longest stretch after the kill in which a held job did not run again
    for span in hit:
        killed = span.run
        after = next((r for r in runs if r.job == killed.job and r.id != killed.id
                      and r.started_at >= killed.started_at), None)
        if after is None:
            if horizon - kill.at < bound:
                verdicts.append(Verdict.UNKNOWN)
                details.append(f"{killed.job}: no run after the kill, but the history ends "
                               f"{horizon - kill.at:.3f} s after it, before the bound")
            else:
                verdicts.append(Verdict.FAIL)
                details.append(f"{killed.job}: no run in the {horizon - kill.at:.3f} s after "
                               f"{target_node} was killed at {t(kill.at)}")
            untaken = max(untaken, horizon - kill.at)
            continue
        delay = after.started_at - kill.at
        worst = max(worst, delay)
        overlap = after.started_at < span.end
        late = delay > bound
        verdicts.append(Verdict.FAIL if overlap or late else Verdict.PASS)
        by = "the restarted holder itself" if after.node == target_node else after.node
        details.append(
            f"{killed.job}: killed run {describe(span, t)}; next run by {by} (run {after.id}, "
            f"tick {after.tick}, token {after.fencing_token}) at {t(after.started_at)}, "
            f"{delay:.3f} s after the kill" + (" (too late)" if late else "")
            + (": possible overlap with the killed run" if overlap else ""))
    verdict = (Verdict.FAIL if Verdict.FAIL in verdicts else
               Verdict.UNKNOWN if Verdict.UNKNOWN in verdicts else Verdict.PASS)
    measured = (f"next run {worst:.3f} s after the kill at {t(kill.at)} (the worst of the "
                f"{len(hit)} job(s) {target_node} held)")
    if untaken:
        # A job that never ran again has no takeover time; how long it went without one is known.
        measured = (f"not taken over: no run in the {untaken:.3f} s after the kill at {t(kill.at)}"
                    + (f" (others {worst:.3f} s)" if worst else ""))
        values = (("bound_s", bound), ("jobs_held", float(len(hit))), ("not_taken_over_s", untaken))
    else:
        values = (("measured_s", worst), ("bound_s", bound), ("jobs_held", float(len(hit))))
    return CheckResult(TAKEOVER, verdict, measured, expected, derivation, tuple(details), values)

# -- registration -------------------------------------------------------------------------------


def _backend(ctx: CheckContext):
    return ctx.expectations.backend


def _duplicates_objective(count: float | None, objectives: Objectives, measured: str,
                          how: str) -> ObjectiveResult:
    return measured_objective("duplicate_job_runs", objectives, value=count,
                              passed=(None if count is None
                                      else count <= objectives.duplicate_job_runs),
                              measured=measured, derivation=how)

def _exclusivity(ctx: CheckContext, params: NoParams) -> CheckResult:
    ctx.observation(Observation.JOB_RECORDS)
    backend = _backend(ctx)
    return check_lock_exclusivity(ctx.history, job_interval_s=backend.job_interval_s,
                                  lock_ttl_s=backend.lock_ttl_s, max_run_s=backend.max_run_s,
                                  jobs=backend.jobs)


def _exclusivity_objective(result: CheckResult, objectives: Objectives, ctx: CheckContext,
                           params: NoParams) -> ObjectiveResult:
    overlaps, ticks = result.value("overlaps"), result.value("duplicate_ticks")
    count = (None if overlaps is None or ticks is None or not result.value("runs")
             else overlaps + ticks)
    return _duplicates_objective(count, objectives,
                                 "not measured" if count is None else
                                 f"{overlaps:.0f} overlapping runs + {ticks:.0f} ticks run twice",
                                 "job_runs rows: runs of one job overlapping in time, and ticks "
                                 "with more than one run")


def lease_prediction(ctx: CheckContext, objectives: Objectives, check: str) -> Prediction:
    """Whether the backends' leases alone keep runs apart: locking on, and a lease that lasts
    the run (renewed, or a TTL longer than the longest run)."""
    backend = _backend(ctx)
    threshold = threshold_text(objectives, "duplicate_job_runs")
    if not backend.locking:
        return Prediction("duplicate_job_runs", check, threshold, "every node runs every tick",
                          False, "locking is off (LAB_LOCKING=0)")
    if not backend.lock_renewal and backend.lock_ttl_s < backend.job_duration_s:
        return Prediction("duplicate_job_runs", check, threshold, "overlapping runs every tick",
                          False, f"lock_ttl {backend.lock_ttl_s:g} s < job_duration "
                          f"{backend.job_duration_s:g} s and the lease is never renewed: it "
                          "expires mid-run and the next tick's node starts")
    how = ("renewed every TTL/3" if backend.lock_renewal
           else f"lock_ttl {backend.lock_ttl_s:g} s >= job_duration {backend.job_duration_s:g} s")
    return Prediction("duplicate_job_runs", check, threshold, "no overlap while nodes run freely",
                      True, f"one lock per job, its lease outlives the run ({how}); a node "
                      "paused past the TTL or a store that loses the lock is not covered")


def _exclusivity_predict(ctx: CheckContext, params: NoParams, objectives: Objectives) -> Prediction:
    return lease_prediction(ctx, objectives, EXCLUSIVITY)


register(CheckDef(
    name=EXCLUSIVITY, params=NoParams, judge=_exclusivity,
    summary="no two runs of a job overlap, no tick runs twice, every judged tick runs (job_runs)",
    needs=frozenset({Observation.JOB_RECORDS}),
    objectives=(ObjectiveHook("duplicate_job_runs", _exclusivity_objective,
                              _exclusivity_predict),)))

def _fencing(ctx: CheckContext, params: NoParams) -> CheckResult:
    ctx.observation(Observation.JOB_RECORDS)
    backend = _backend(ctx)
    return check_fencing(ctx.history, fencing_expected=backend.fencing,
                         max_run_s=backend.max_run_s, jobs=backend.jobs)


def _fencing_objective(result: CheckResult, objectives: Objectives, ctx: CheckContext,
                       params: NoParams) -> ObjectiveResult:
    overlaps, uncontained = result.value("overlaps"), result.value("uncontained")
    return _duplicates_objective(uncontained, objectives,
                                 "not measured" if uncontained is None else
                                 f"{uncontained:.0f} of {overlaps:.0f} overlapping runs had both "
                                 "writes applied",
                                 "an overlap whose stale write was not refused ran the job's side "
                                 "effect twice; one refused by fencing did not")


def _fencing_predict(ctx: CheckContext, params: NoParams, objectives: Objectives) -> Prediction:
    backend = _backend(ctx)
    threshold = threshold_text(objectives, "duplicate_job_runs")
    if backend.fencing:
        return Prediction("duplicate_job_runs", FENCING, threshold, "stale writes refused", True,
                          "fencing on: a write with a token below the last accepted is refused")
    return Prediction("duplicate_job_runs", FENCING, threshold, "a stale holder's write lands",
                      False, "fencing off (LAB_FENCING=0): the resource takes every write")


register(CheckDef(
    name=FENCING, params=NoParams, judge=_fencing,
    summary="every overlap of two holders is contained: the stale holder's write is refused",
    needs=frozenset({Observation.JOB_RECORDS}),
    objectives=(ObjectiveHook("duplicate_job_runs", _fencing_objective, _fencing_predict),)))

class TakeoverParams(CheckParams):
    target: str


def _takeover(ctx: CheckContext, params: TakeoverParams) -> CheckResult:
    ctx.observation(Observation.JOB_RECORDS)
    backend = _backend(ctx)
    return check_lock_takeover(ctx.history, target_node=ctx.node(params.target),
                               lock_ttl_s=backend.lock_ttl_s, job_interval_s=backend.job_interval_s,
                               jobs=backend.jobs)


def _takeover_objective(result: CheckResult, objectives: Objectives, ctx: CheckContext,
                        params: TakeoverParams) -> ObjectiveResult:
    measured = result.value("measured_s")
    untaken = result.value("not_taken_over_s")
    if untaken is not None:
        return measured_objective("lock_takeover", objectives, value=None,
                                  passed=False if untaken >= objectives.lock_takeover else None,
                                  measured=f"not taken over in the {untaken:.3f} s after the kill",
                                  derivation="the first run of the dead holder's job after its "
                                  "kill (job_runs)")
    return measured_objective("lock_takeover", objectives, value=measured,
                              passed=(None if measured is None
                                      else measured <= objectives.lock_takeover),
                              measured="not measured" if measured is None else
                              f"the job ran again {text_seconds(round(measured, 3))} after the "
                              "kill",
                              derivation="the first run of the dead holder's job after its kill "
                              "(job_runs)")


def _takeover_predict(ctx: CheckContext, params: TakeoverParams,
                      objectives: Objectives) -> Prediction:
    backend = _backend(ctx)
    worst = backend.lock_ttl_s + backend.job_interval_s
    return Prediction("lock_takeover", TAKEOVER, threshold_text(objectives, "lock_takeover"),
                      f"within {worst:g} s", worst <= objectives.lock_takeover,
                      f"the dead holder's lease runs out after lock_ttl, the next tick comes "
                      f"within job_interval: {backend.lock_ttl_s:g} + {backend.job_interval_s:g} "
                      f"= {worst:g} s")


register(CheckDef(
    name=TAKEOVER, params=TakeoverParams, judge=_takeover,
    marker=TimelineMark("next run", After.INJECT),
    summary="after the lock holder is killed, another node runs the job within lock_ttl + one "
            "interval, without overlap",
    needs=frozenset({Observation.JOB_RECORDS}),
    objectives=(ObjectiveHook("lock_takeover", _takeover_objective, _takeover_predict),)))
