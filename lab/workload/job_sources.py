"""Where a run's job records come from: the reference backend's tables, a user's backend's
log lines, or its Redis lock keys (``[backend.contract] job_runs``).

Every source gives the same typed records (``JobRun``, ``FencingRejection``, ``LockSample``),
so the lock checks judge a black-box backend exactly as they judge the reference one; what a
source cannot see is said (``locks_unavailable``), and the checks needing it are unknown.

From logs, each backend's ``docker logs`` (Docker's timestamps, or the time the line itself
carries in ``(?P<at>...)``) gives one run per ``acquired`` line, ended by the same node's next
``released`` line for that job (unfinished otherwise: its end is unknown, as for a killed
run). Its tick is the captured ``(?P<tick>...)``, else floor(start / job_interval).
From Redis, a run is a stretch of samples naming the same holder: the lock's lifetime, a
coarse view (10 samples/s) that cannot overlap itself; the lock-holders check then only says
that Redis named one holder at a time.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import redis

from lab.contract import REFERENCE_JOBS, BackendContract
from lab.history import FencingRejection, JobRun, LockSample
from lab.topology.lab import Lab
from lab.workload.jobs import LockSampler, read_fencing_rejections, read_job_runs, read_locks


class JobSource(Protocol):
    """The job records of one run."""

    jobs: tuple[str, ...]
    locks_unavailable: str | None       # why lock samples cannot be taken (None: they can)

    def sampler(self, max_duration_s: float) -> LockSampler | None: ...

    def runs(self, since: float, end: float, samples: list[LockSample]) -> list[JobRun]: ...

    def rejections(self, since: float) -> list[FencingRejection]: ...

    def run_recorded(self, job: str, node: str, since: float, token: int | None) -> bool: ...


def _recorded(runs: list[JobRun], job: str, node: str, token: int | None) -> bool:
    # A token both sides know names the run; without one, the node's run since the lock was
    # seen free or held by another is the one.
    return any(r.job == job and r.node == node
               and (token is None or r.fencing_token is None or r.fencing_token == token)
               for r in runs)


@dataclass
class TableSource:
    """The reference backend: ``job_runs`` and ``fencing_rejections`` in PostgreSQL."""

    lab: Lab
    jobs: tuple[str, ...] = REFERENCE_JOBS
    locks_unavailable: str | None = None
    contract: BackendContract | None = None   # a user's backend that keeps the same tables

    def sampler(self, max_duration_s: float) -> LockSampler | None:
        if self.locks_unavailable is not None:
            return None
        return lock_sampler(self.lab, self.contract, self.jobs, max_duration_s)

    def runs(self, since: float, end: float, samples: list[LockSample]) -> list[JobRun]:
        return [run for run in read_job_runs(self.lab.endpoints.postgres_dsn, since)
                if run.started_at <= end]

    def rejections(self, since: float) -> list[FencingRejection]:
        return read_fencing_rejections(self.lab.endpoints.postgres_dsn, since)

    def run_recorded(self, job: str, node: str, since: float, token: int | None) -> bool:
        return _recorded(read_job_runs(self.lab.endpoints.postgres_dsn, since), job, node, token)


LockReader = Callable[[redis.Redis, tuple[str, ...]], dict[str, tuple[str, int | None]]]


def lock_reader(contract: BackendContract | None) -> LockReader | None:
    """How a backend's job locks are read from Redis: the reference backend's keys, a
    contract's key and holder patterns, or None when a contract names no lock keys."""
    if contract is None:
        return read_locks
    return pattern_reader(contract) if contract.locks is not None else None


def lock_sampler(lab: Lab, contract: BackendContract | None, jobs: tuple[str, ...],
                 max_duration_s: float) -> LockSampler | None:
    """A sampler of ``jobs``' locks as ``lock_reader`` reads them (None: they cannot be read)."""
    reader = lock_reader(contract)
    if reader is None:
        return None
    return LockSampler(lambda: lab.endpoints.redis_url, jobs, max_duration_s=max_duration_s,
                       reader=reader)


def pattern_reader(contract: BackendContract) -> LockReader:
    """A lock reader for the contract's key pattern and holder pattern."""
    assert contract.locks is not None
    holder = re.compile(contract.locks.holder)
    key = contract.locks.key

    def read(client: redis.Redis, jobs: tuple[str, ...]) -> dict[str, tuple[str, int | None]]:
        held = {}
        for job, raw in zip(jobs, client.mget([key.format(job=job) for job in jobs]),
                            strict=True):
            if raw is None:
                continue
            match = holder.search(raw.decode(errors="replace"))
            # A value the pattern does not read is held by someone the lab cannot name.
            node = match.group("node") if match else "?"
            token = match.groupdict().get("token") if match else None
            held[job] = (node, int(token) if token and token.isdigit() else None)
        return held

    return read


@dataclass
class _ContractSource:
    lab: Lab
    contract: BackendContract
    jobs: tuple[str, ...] = ()
    locks_unavailable: str | None = None

    def __post_init__(self) -> None:
        self.jobs = self.contract.jobs
        if self.contract.locks is None:
            self.locks_unavailable = ("the backend contract names no lock keys "
                                      "([backend.contract.locks] key and holder)")

    def sampler(self, max_duration_s: float) -> LockSampler | None:
        return lock_sampler(self.lab, self.contract, self.jobs, max_duration_s)

    def rejections(self, since: float) -> list[FencingRejection]:
        # A black box records no refused writes the lab could read.
        return []


def _docker_time(text: str) -> float:
    whole, _, fraction = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{whole}.{(fraction[:6] or '0').ljust(6, '0')}+00:00") \
        .timestamp()


def _line_time(text: str) -> float:
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    return datetime.fromisoformat(value).timestamp()


@dataclass(frozen=True)
class LogEvent:
    """One job log line: what it says, about which job, from which node, when."""

    kind: str            # acquired, skipped, released
    job: str
    node: str
    at: float
    tick: int | None = None
    token: int | None = None


def parse_job_log(text: str, node: str, contract: BackendContract) -> list[LogEvent]:
    """The job events of one container's log (``docker logs --timestamps``)."""
    assert contract.logs is not None
    patterns = [(kind, re.compile(pattern)) for kind, pattern in
                (("acquired", contract.logs.acquired), ("skipped", contract.logs.skipped),
                 ("released", contract.logs.released)) if pattern]
    events = []
    for line in text.splitlines():
        stamp, _, rest = line.partition(" ")
        for kind, pattern in patterns:
            match = pattern.search(rest)
            if match is None:
                continue
            groups = match.groupdict()
            try:
                at = _line_time(groups["at"]) if groups.get("at") else _docker_time(stamp)
            except ValueError:
                continue
            tick = groups.get("tick")
            token = groups.get("token")
            events.append(LogEvent(kind, groups["job"], node, at,
                                   int(tick) if tick and tick.isdigit() else None,
                                   int(token) if token and token.isdigit() else None))
            break
    return events


def runs_from_events(events: list[LogEvent], job_interval_s: float) -> list[JobRun]:
    """Runs: an ``acquired`` line opens one, the same node's next ``released`` for the job
    ends it; a run never released is unfinished (its end unknown)."""
    runs: list[JobRun] = []
    open_runs: dict[tuple[str, str], LogEvent] = {}

    def close(start: LogEvent, end: float | None) -> None:
        tick = start.tick if start.tick is not None else math.floor(start.at / job_interval_s)
        runs.append(JobRun(id=len(runs) + 1, job=start.job, node=start.node,
                           fencing_token=start.token, tick=tick, started_at=start.at,
                           finished_at=end, outcome="ok" if end is not None else "running"))

    for event in sorted(events, key=lambda e: e.at):
        key = (event.node, event.job)
        if event.kind == "acquired":
            if key in open_runs:
                close(open_runs.pop(key), None)
            open_runs[key] = event
        elif event.kind == "released" and key in open_runs:
            close(open_runs.pop(key), event.at)
    for start in open_runs.values():
        close(start, None)
    return sorted(runs, key=lambda r: (r.started_at, r.id))


@dataclass
class LogSource(_ContractSource):
    """A user's backend whose job lines are matched in each backend's container log."""

    skipped: dict[str, int] = field(default_factory=dict)

    def runs(self, since: float, end: float, samples: list[LockSample]) -> list[JobRun]:
        events: list[LogEvent] = []
        for node, role in self.lab.roles.items():
            if role != "backend":
                continue
            text = self.lab.engine.logs(self.lab.container(node), since=max(0.0, since - 1),
                                        timestamps=True)
            events += [e for e in parse_job_log(text, node, self.contract) if e.at >= since]
        for e in events:
            if e.kind == "skipped":
                self.skipped[e.node] = self.skipped.get(e.node, 0) + 1
        runs = runs_from_events(events, self.contract.job_interval_s)
        return [run for run in runs if run.job in self.jobs and run.started_at <= end]

    def run_recorded(self, job: str, node: str, since: float, token: int | None) -> bool:
        return _recorded(self.runs(since, math.inf, []), job, node, token)


@dataclass
class RedisSource(_ContractSource):
    """A user's backend seen only through its lock keys: a run is a held stretch."""

    def runs(self, since: float, end: float, samples: list[LockSample]) -> list[JobRun]:
        return runs_from_samples(samples, self.contract.job_interval_s)

    def run_recorded(self, job: str, node: str, since: float, token: int | None) -> bool:
        # The lock is the record: a held lock is a run under way.
        return True


def runs_from_samples(samples: list[LockSample], job_interval_s: float) -> list[JobRun]:
    """One run per stretch of consecutive samples naming the same holder of a job's lock."""
    by_job: dict[str, list[LockSample]] = defaultdict(list)
    for sample in sorted(samples, key=lambda s: s.sent_at):
        by_job[sample.job].append(sample)
    runs: list[JobRun] = []
    for job, stream in by_job.items():
        first: LockSample | None = None
        last: LockSample | None = None
        for sample in [*stream, None]:
            same = sample is not None and first is not None and sample.holder == first.holder \
                and sample.fencing_token == first.fencing_token
            if first is not None and not same:
                assert last is not None
                runs.append(JobRun(id=len(runs) + 1, job=job, node=first.holder or "?",
                                   fencing_token=first.fencing_token,
                                   tick=math.floor(first.sent_at / job_interval_s),
                                   started_at=first.sent_at, finished_at=last.received_at,
                                   outcome="ok"))
                first = None
            if sample is not None and sample.holder is not None and first is None:
                first = sample
            if sample is not None and first is not None:
                last = sample
    return sorted(runs, key=lambda r: (r.started_at, r.id))


def job_source(lab: Lab) -> JobSource:
    """The job records' source for this lab's backend."""
    contract = lab.config.backend.contract
    if contract is None or contract.job_runs == "table":
        source = TableSource(lab, contract=contract)
        if contract is not None:
            source.jobs = contract.jobs
            if contract.locks is None:
                source.locks_unavailable = ("the backend contract names no lock keys "
                                            "([backend.contract.locks])")
        return source
    if contract.job_runs == "logs":
        return LogSource(lab, contract)
    return RedisSource(lab, contract)
