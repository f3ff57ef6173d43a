"""What ``lab watch`` shows, as typed snapshots, and the pure functions that summarise the
sampler's buffers into them: buffers in, ``Snapshot`` out, no I/O (``lab.watch.sampler`` reads
the lab; ``lab.watch.panels`` draws a snapshot).

Everything here is a measurement: the probe stream's answers, NGINX's access log and
stub_status, Docker's states, the fault record. Nothing is judged (the watch imports no check);
the one prediction the screen states comes from the configuration's own arithmetic
(``lab.expectations.worst_case_ejection_s``).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from lab.engine import ContainerInfo
from lab.faults import record as fault_record
from lab.history import AccessLogEntry, Outcome, PoolSample, RequestRecord
from lab.stats import nearest_rank
from lab.topology.access_log import upstream_attempts
from lab.topology.plan import container_name

SCHEMA = 1
SERIES_BUCKETS = 30          # one sparkline bucket per second


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NodeView(_Model):
    """One node: Docker's state, and its readiness probe's last answer (None: not asked yet)."""

    name: str
    role: str
    state: str
    ready: bool | None
    detail: str = ""


class FaultView(_Model):
    """One recorded fault (``lab.faults.record``) and whether it is still in place."""

    target: str
    kind: str
    params: str
    since: float
    by: str
    state: str
    until: float | None = None


class BackendView(_Model):
    """One backend as the probe stream's clients see it."""

    name: str
    answered: int                    # ok answers it gave in the window
    share: float                     # of every ok answer in the window
    per_s: float                     # ok answers in the last whole second
    series: tuple[int, ...]          # ok answers per second, oldest first (the sparkline)
    last_ok_at: float | None


class ProbeView(_Model):
    """The probe stream over the sliding window: shares, statuses and latency."""

    rate_per_s: float
    path: str
    window_s: float
    sent: int                        # finished requests sent in the window
    ok: int
    failed: int
    unknown: int
    statuses: tuple[tuple[str, int], ...]   # "200", "502", "no answer", ... -> count
    p50_ms: float | None
    p99_ms: float | None
    backends: tuple[BackendView, ...]
    total: int                       # requests finished since the stream started


class UpstreamView(_Model):
    """One upstream server as NGINX's access log shows it over the window, and, while a fault
    is in place on it, when NGINX stopped trying it (the last try of the first run of tries
    after the fault; later single tries are NGINX probing it again every fail_timeout)."""

    name: str
    tries: int
    failed: int                      # tries answered 5xx or not at all
    last_try_at: float | None
    fault_since: float | None = None       # the fault in place on it: when it was injected
    ejected_after_s: float | None = None   # its last try of that run, after the fault
    ejection_settled: bool = False         # a quiet gap followed: NGINX took it out


class NginxView(_Model):
    """NGINX's own view: every try of every request it logged in the window."""

    window_s: float
    requests: int
    requests_per_s: float            # over the window, or the part of it the log covers
    retried: int                     # requests NGINX tried on more than one server
    no_live_upstream: int            # answered 502 with no server left to try
    statuses: tuple[tuple[str, int], ...]
    upstreams: tuple[UpstreamView, ...]


class StubStatus(_Model):
    """NGINX's stub_status page, and the request rate since the previous reading."""

    at: float
    active: int
    accepts: int
    handled: int
    requests: int
    reading: int
    writing: int
    waiting: int
    requests_per_s: float | None = None


class LockView(_Model):
    """One job's lock: who holds it and its fencing token (None: free)."""

    job: str
    holder: str | None
    token: int | None


class PoolView(_Model):
    """PgBouncer's SHOW POOLS for the app database."""

    at: float
    cl_active: int
    cl_waiting: int
    sv_active: int
    sv_idle: int
    servers: int                     # every server connection, in use or idle
    maxwait_s: float


class Snapshot(_Model):
    """Everything the watch shows at one instant (``lab watch --json`` prints these)."""

    schema_version: int = SCHEMA
    at: float
    lab: str
    ends_at: float                   # the probe stream and the sampling stop by themselves
    nodes: tuple[NodeView, ...]
    faults: tuple[FaultView, ...]
    probe: ProbeView
    nginx: NginxView
    stub_status: StubStatus | None
    locks: tuple[LockView, ...] | None
    pool: PoolView | None
    errors: tuple[tuple[str, str], ...] = ()   # source -> why it has no fresh reading


# -- pure parts ---------------------------------------------------------------------------------


_STUB = re.compile(r"Active connections:\s*(\d+)\s+server accepts handled requests\s+(\d+)\s+"
                   r"(\d+)\s+(\d+)\s+Reading:\s*(\d+)\s+Writing:\s*(\d+)\s+Waiting:\s*(\d+)")


def parse_stub_status(text: str, at: float, previous: StubStatus | None = None) -> StubStatus:
    """NGINX's stub_status page as a record; ValueError for anything else."""
    match = _STUB.search(text)
    if match is None:
        raise ValueError(f"not a stub_status page: {text[:80]!r}")
    active, accepts, handled, requests, reading, writing, waiting = map(int, match.groups())
    rate = None
    if previous is not None and at > previous.at and requests >= previous.requests:
        rate = (requests - previous.requests) / (at - previous.at)
    return StubStatus(at=at, active=active, accepts=accepts, handled=handled, requests=requests,
                      reading=reading, writing=writing, waiting=waiting, requests_per_s=rate)


def _status_label(record: RequestRecord) -> str:
    if record.status is not None:
        return str(record.status)
    return "no answer" if record.outcome is Outcome.UNKNOWN else "refused/reset"


def probe_view(records: Iterable[RequestRecord], now: float, window_s: float,
               backends: Sequence[str], *, rate_per_s: float, path: str,
               total: int) -> ProbeView:
    """The probe stream over [now - window, now): each backend's share of the ok answers, status
    counts, p50/p99 latency, and per-second ok answers over the last SERIES_BUCKETS seconds."""
    recent = [r for r in records if now - window_s <= r.sent_at < now]
    ok = [r for r in recent if r.outcome is Outcome.OK]
    latencies = [r.latency_s for r in recent if r.latency_s is not None]
    by_backend = Counter(r.backend for r in ok if r.backend)
    # Buckets are whole wall-clock seconds, the last one the current (partial) second.
    current = math.floor(now)
    first = current - SERIES_BUCKETS + 1
    series = {name: [0] * SERIES_BUCKETS for name in backends}
    last_ok: dict[str, float] = {}
    for r in records:
        if r.outcome is not Outcome.OK or not r.backend:
            continue
        last_ok[r.backend] = max(last_ok.get(r.backend, 0.0), r.sent_at)
        index = math.floor(r.sent_at) - first
        if r.backend in series and 0 <= index < SERIES_BUCKETS:
            series[r.backend][index] += 1
    views = tuple(BackendView(
        name=name, answered=by_backend.get(name, 0),
        share=by_backend.get(name, 0) / len(ok) if ok else 0.0,
        per_s=float(series[name][-2]), series=tuple(series[name]),
        last_ok_at=last_ok.get(name)) for name in backends)
    statuses = Counter(_status_label(r) for r in recent)
    return ProbeView(
        rate_per_s=rate_per_s, path=path, window_s=window_s, sent=len(recent), ok=len(ok),
        failed=sum(r.outcome is Outcome.FAIL for r in recent),
        unknown=sum(r.outcome is Outcome.UNKNOWN for r in recent),
        statuses=tuple(sorted(statuses.items())),
        p50_ms=nearest_rank(latencies, 0.5) * 1000 if latencies else None,
        p99_ms=nearest_rank(latencies, 0.99) * 1000 if latencies else None,
        backends=views, total=total)


def _failed_try(status: str) -> bool:
    return not status[:1].isdigit() or status.startswith("5")


def ejection_after(tries: Sequence[float], since: float, now: float, gap_s: float,
                   lag_s: float = 0.0) -> tuple[float | None, bool]:
    """The last try of the first run of tries after a fault, relative to it, and whether it is
    settled (a gap longer than ``gap_s`` followed it): NGINX took the server out then.

    NGINX logs a try when its request ends, up to ``lag_s`` after the try began (a connect or
    read timeout), so a quiet log proves a gap only up to ``now - lag_s``."""
    end = None
    for at in sorted(t for t in tries if t >= since):
        if end is not None and at - end > gap_s:
            return end - since, True
        end = at
    seen_until = now - lag_s
    if end is None:
        return None, seen_until - since > gap_s
    return end - since, seen_until - end > gap_s


def nginx_view(entries: Iterable[AccessLogEntry], now: float, window_s: float,
               backends: Sequence[str], faults: Sequence[FaultView] = (), *,
               gap_s: float = 1.0, lag_s: float = 0.0,
               settled: Mapping[tuple[str, float], float | None] | None = None) -> NginxView:
    """NGINX's tries over [now - window, now) per upstream server; for a server with a fault in
    place, when NGINX stopped trying it (``ejection_after``; ``settled`` keeps values already
    settled, whose tries may have left the buffer since)."""
    entries = list(entries)
    recent = [e for e in entries if now - window_s <= e.msec < now]
    attempts = upstream_attempts(recent)
    since = {f.target: f.since for f in faults if f.state.startswith("in place")}
    after = upstream_attempts([e for e in entries if e.msec >= min(since.values(), default=now)])
    views = []
    for name in backends:
        mine = [a for a in attempts if a.backend == name]
        view = UpstreamView(name=name, tries=len(mine),
                            failed=sum(_failed_try(a.status) for a in mine),
                            last_try_at=max((a.started_at for a in mine), default=None))
        if name in since:
            key = (name, since[name])
            if settled is not None and key in settled:
                ejected, done = settled[key], True
            else:
                ejected, done = ejection_after(
                    [a.started_at for a in after if a.backend == name], since[name], now, gap_s,
                    lag_s)
            view = view.model_copy(update={"fault_since": since[name], "ejected_after_s": ejected,
                                           "ejection_settled": done})
        views.append(view)
    covered = min(window_s, now - min((e.msec for e in recent), default=now))
    return NginxView(
        window_s=window_s, requests=len(recent),
        requests_per_s=len(recent) / covered if covered > 0 else 0.0,
        retried=sum(len(e.upstream_addrs) > 1 for e in recent),
        no_live_upstream=sum(e.status == 502 and any(b not in backends and ":" not in b
                                                     for b in e.upstream_backends)
                             for e in recent),
        statuses=tuple(sorted(Counter(str(e.status) for e in recent).items())),
        upstreams=tuple(views))


def readiness_detail(detail: str) -> str:
    """A readiness answer made short: a backend's ``503 {"checks": {"redis": "failed"}}``
    becomes "503: redis failed"; anything else stays as it is."""
    status, _, body = detail.partition(" ")
    if not status.isdigit() or not body.startswith("{"):
        return detail
    try:
        checks = json.loads(body).get("checks") or {}
    except (ValueError, AttributeError):
        return status
    failed = [name for name, state in checks.items() if state != "ok"]
    return f"{status}: {', '.join(failed)} failed" if failed else status


def node_views(roles: Mapping[str, str], containers: Mapping[str, ContainerInfo], lab_name: str,
               ready: Mapping[str, tuple[bool, str]]) -> tuple[NodeView, ...]:
    """Every node's Docker state and its last readiness answer (pure)."""
    out = []
    for node, role in roles.items():
        info = containers.get(container_name(lab_name, node))
        state = info.status if info is not None else "missing"
        answer = ready.get(node)
        if state != "running":
            out.append(NodeView(name=node, role=role, state=state, ready=False, detail=state))
        elif answer is None:
            out.append(NodeView(name=node, role=role, state=state, ready=None))
        else:
            out.append(NodeView(name=node, role=role, state=state, ready=answer[0],
                                detail=answer[1]))
    return tuple(out)


def fault_views(containers: Mapping[str, ContainerInfo], lab_name: str) -> tuple[FaultView, ...]:
    """The fault record, each with whether it is still in place (pure)."""
    return tuple(FaultView(target=r.target, kind=r.kind, params=r.shown_params(), since=r.since,
                           by=r.who(), state=fault_record.state(r, containers, lab_name),
                           until=r.until)
                 for r in fault_record.parse(containers.values()))


def pool_view(sample: PoolSample) -> PoolView:
    """One SHOW POOLS sample as the pool panel shows it (pure)."""
    return PoolView(at=sample.at, cl_active=sample.cl_active, cl_waiting=sample.cl_waiting,
                    sv_active=sample.sv_active, sv_idle=sample.sv_idle,
                    servers=(sample.sv_active + sample.sv_idle + sample.sv_used
                             + sample.sv_tested + sample.sv_login),
                    maxwait_s=sample.maxwait_s)
