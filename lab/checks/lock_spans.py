"""Job runs as spans of time, for the lock checks (``lab.checks.locks``, ``locks_store``): when
each run may have executed, which runs of a job overlapped, and how a run is described.

An unfinished run (``finished_at`` NULL) has an unknown outcome. As in Jepsen it is never
taken as "ended": it may have been running until the latest moment the history allows —
its node's death (a fault whose effect ``ends`` the process: kill, stop, restart; a run cannot
outlast its process; the lock may live on until its TTL, but nothing executes under it), and
without a death, no bound at all (a frozen run resumes when unfrozen). ``max_run_s`` can add
the bound a live process gives. Faults are read by their recorded ``Effect``, never by name.

Times in the details are seconds after the run's ``start`` mark (or the first run). This
module registers no check: it is the measurement the lock checks share.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from lab.contract import REFERENCE_JOBS
from lab.history import Effect, FaultEvent, FaultPhase, History, JobRun

JOBS = REFERENCE_JOBS  # the reference backend's; a run judges its backend's (BackendPolicy.jobs)
REDIS = "redis"

Window = tuple[FaultEvent, FaultEvent | None]   # a fault's inject and its heal (None: never)


@dataclass(frozen=True)
class RunSpan:
    """A run and the latest it may have ended: ``finished_at``, or a bound for an unknown one."""

    run: JobRun
    end: float                          # math.inf when nothing bounds an unfinished run
    death: FaultEvent | None = None     # the fault that ended the process of an unknown run
    max_run_s: float | None = None      # set when the live-process bound was the tighter one

    @property
    def known(self) -> bool:
        """The run's end is recorded."""
        return self.run.finished_at is not None


@dataclass(frozen=True)
class Overlap:
    """Two runs of one job that (possibly) executed at the same time; ``first`` started first."""

    first: RunSpan
    second: RunSpan

    @property
    def certain(self) -> bool:
        """Both ran at once for sure: the first one's end is recorded (the second's start is)."""
        return self.first.known


def run_span(run: JobRun, faults: Iterable[FaultEvent], max_run_s: float | None = None) -> RunSpan:
    """The run with the latest time it may have ended (see the module docstring)."""
    if run.finished_at is not None:
        return RunSpan(run, run.finished_at)
    faults = list(faults)
    death = min((e for e in faults if e.target == run.node and e.phase is FaultPhase.INJECT
                 and e.effect.ends and e.at >= run.started_at),
                key=lambda e: e.at, default=None)
    end = math.inf if death is None else death.at
    if max_run_s is not None:
        live_end = run.started_at + max_run_s + _frozen_s(run, faults, run.started_at + max_run_s)
        if live_end < end:
            return RunSpan(run, live_end, None, max_run_s)
    return RunSpan(run, end, death)


def _frozen_s(run: JobRun, faults: Iterable[FaultEvent], until: float) -> float:
    """How long ``run``'s node was frozen after it started, counting freezes before ``until``."""
    history = History(faults=[e for e in faults if e.target == run.node and e.effect.freezes])
    frozen = 0.0
    for inject, heal in history.fault_windows():
        if inject.started_at >= until + frozen:
            break
        resumed = math.inf if heal is None else heal.at
        frozen += max(0.0, resumed - max(inject.started_at, run.started_at))
    return frozen


def find_overlaps(history: History, jobs: tuple[str, ...] = JOBS,
                  max_run_s: float | None = None) -> list[Overlap]:
    """Every pair of runs of the same job whose (possible) execution intervals intersect."""
    by_job: dict[str, list[RunSpan]] = defaultdict(list)
    for run in history.job_runs:
        if run.job in jobs:
            by_job[run.job].append(run_span(run, history.faults, max_run_s))
    overlaps: list[Overlap] = []
    for job in jobs:
        spans = sorted(by_job[job], key=lambda s: (s.run.started_at, s.run.id))
        for i, first in enumerate(spans):
            for second in spans[i + 1:]:
                if second.run.started_at >= first.end:
                    break
                overlaps.append(Overlap(first, second))
    return overlaps


class Clock:
    """Formats epoch seconds relative to the run's start, so details stay readable."""

    def __init__(self, history: History):
        starts = [r.started_at for r in history.job_runs]
        self.origin = history.mark_at("start") or (min(starts) if starts else 0.0)

    def __call__(self, at: float) -> str:
        """``at`` as signed seconds from the origin; an unbounded end as "(no bound)"."""
        if math.isinf(at):
            return "(no bound)"
        return f"{at - self.origin:+.3f} s"


def describe(span: RunSpan, t: Clock) -> str:
    """A run, its span, and what bounds it when its outcome is unknown, for a check's details."""
    run = span.run
    head = (f"{run.node} (run {run.id}, tick {run.tick}, token {run.fencing_token}) "
            f"from {t(run.started_at)}")
    if span.known:
        return f"{head} to {t(span.end)} [{run.outcome}]"
    if span.death is not None:
        why = f"{span.death.fault} of {run.node} done: the run cannot outlast its process"
    elif span.max_run_s is not None:
        why = f"max_run_s = {span.max_run_s:g} s plus time frozen"
    else:
        why = f"{run.node} was not killed or stopped after it started: no bound"
    return f"{head}, outcome unknown, may have run until {t(span.end)} ({why})"


def describe_overlap(overlap: Overlap, t: Clock) -> str:
    """Two overlapping runs (certainly or possibly), for a check's details."""
    kind = "overlap" if overlap.certain else "possible overlap"
    return (f"{overlap.first.run.job}: {kind}: {describe(overlap.first, t)} and "
            f"{describe(overlap.second, t)}")


def fault_windows(history: History, targets: Iterable[str],
                  effect: Callable[[Effect], bool] | None = None) -> list[Window]:
    """The fault windows on ``targets`` (those whose effect passes ``effect``), in time order."""
    windows = [w for target in targets for w in history.fault_windows(target)
               if effect is None or effect(w[0].effect)]
    return sorted(windows, key=lambda w: w[0].at)
