"""The history of a run: typed records that the workload, faults and log readers append to,
and that checks read. Times are Unix epoch seconds (floats) everywhere, so client records,
fault events and NGINX's own ``$msec`` share one clock (the containers share the host's).

As in Jepsen, an operation ends ``ok`` (it happened), ``fail`` (it certainly did not) or
``unknown`` (a timeout or a lost connection: it may have happened). A check must never
count ``unknown`` as "did not happen".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Outcome(StrEnum):
    OK = "ok"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One client request sent through NGINX, as the probe client saw it."""

    id: int
    client: str
    method: str
    path: str
    intended_at: float          # when the open-model schedule said it should leave
    sent_at: float              # when it actually left
    latency_s: float | None     # None when no answer came
    status: int | None
    backend: str | None         # X-Backend-Id of the answer
    outcome: Outcome
    error: str | None = None
    request_id: str | None = None  # X-Request-Id sent, joins with the access log

    @property
    def finished_at(self) -> float | None:
        return None if self.latency_s is None else self.sent_at + self.latency_s


class FaultPhase(StrEnum):
    INJECT = "inject"
    HEAL = "heal"


@dataclass(frozen=True, slots=True)
class Effect:
    """What a fault does to its target while it lasts: the meaning checks read, declared by the
    fault's definition (``lab.faults``) and recorded on each of its events, so that a check, the
    runner or the report asks what a fault did and never which fault it was.

    The flags combine: a graceful stop ``ends`` and ``drains``; a restart also ``restarts``.
    """

    ends: bool = False          # the target's process ends: nothing it ran outlasts the inject
    drains: bool = False        # it ends through SIGTERM: unready first, serving for its drain
    restarts: bool = False      # the inject starts it again: it is down only while the inject runs
    freezes: bool = False       # the process is paused, and resumes where it was at the heal
    cuts_off: bool = False      # its links carry nothing (dropped or reset); the process runs on
    slows: bool = False         # it still answers, later or after lost packets
    forgets: bool = False       # it loses keys it held (evicted, expired early); it runs on
    lookups_fail: bool = False  # its name lookups fail or hang; open connections go on

    def __post_init__(self) -> None:
        if (self.drains or self.restarts) and not self.ends:
            raise TypeError("an effect that drains or restarts the process must end it")

    @property
    def ends_abruptly(self) -> bool:
        """The process dies without warning (SIGKILL): it releases nothing and drains nothing."""
        return self.ends and not self.drains

    @property
    def outage(self) -> bool:
        """From the inject until the heal the target answers nothing: its process is gone,
        frozen or cut off (a dependency in this state is gone for everything that needs it)."""
        return (self.ends and not self.restarts) or self.freezes or self.cuts_off

    def text(self) -> str:
        """The effect in words: "ends (SIGTERM, drains)", "frozen", "nothing"."""
        ends = ("ends" + (" (SIGTERM, drains)" if self.drains else " (abruptly)")
                + (", started again at once" if self.restarts else ""))
        words = [ends if self.ends else "", "frozen" if self.freezes else "",
                 "cut off" if self.cuts_off else "", "slowed" if self.slows else "",
                 "keys lost" if self.forgets else "",
                 "name lookups fail" if self.lookups_fail else ""]
        return ", ".join(w for w in words if w) or "nothing"


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """One half of a fault's inject/heal pair; ``at`` is when the action completed.

    ``effect`` is the fault's, as its definition declared it when the event was recorded
    (results written before effects were recorded read as no effect)."""

    fault: str                  # the fault's registered name, for people: kill, partition, ...
    target: str                 # node name
    phase: FaultPhase
    at: float
    started_at: float           # when the action was issued
    detail: str = ""
    effect: Effect = Effect()
    # The store keys the inject removed (an eviction: ``Effect.forgets``), for the checks that
    # ask whether a lock was among them; empty for every other fault.
    lost_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AccessLogEntry:
    """One line of NGINX's access log: what the load balancer itself recorded."""

    msec: float                 # $msec: when the request finished logging, epoch seconds
    request_time_s: float
    method: str
    uri: str
    status: int
    upstream_addrs: tuple[str, ...]      # every upstream tried, in order
    upstream_backends: tuple[str, ...]   # the same, resolved to node names ("?" if unknown)
    upstream_statuses: tuple[str, ...]
    upstream_times_s: tuple[float | None, ...]  # per attempt; None where nginx logged "-"
    limit_req_status: str       # PASSED, DELAYED, REJECTED, ... or "-"
    remote_addr: str = ""
    request_id: str = ""
    # The worker process that served it ($pid): failure counters are per worker without a
    # zone. 0 where unknown.
    worker: int = 0
    # $upstream_connect_time per attempt; None where nginx logged "-" (never connected).
    upstream_connect_s: tuple[float | None, ...] = ()
    # $upstream_header_time per attempt; None where no response header came (an error, a
    # timeout, or the client gave up first): what tells NGINX's own 502/504 from a backend's.
    upstream_header_s: tuple[float | None, ...] = ()

    @property
    def started_at(self) -> float:
        return self.msec - self.request_time_s


def ready_mark(node: str) -> str:
    """The mark the runner records when a healed node answers its readiness probe again."""
    return f"ready:{node}"


@dataclass(frozen=True, slots=True)
class Mark:
    """A named instant in a run (phase boundaries: steady-before, faults, heal, ...)."""

    name: str
    at: float


@dataclass(frozen=True, slots=True)
class PoolSample:
    """One row of PgBouncer's ``SHOW POOLS`` for one (database, user) pool, read at ``at``."""

    at: float
    cl_active: int
    cl_waiting: int             # sent a query, no server connection yet
    sv_active: int
    sv_idle: int
    sv_used: int
    sv_tested: int
    sv_login: int
    maxwait_s: float            # maxwait + maxwait_us / 1e6: the oldest waiting client's wait
    database: str = ""
    user: str = ""
    pool_mode: str = ""         # as SHOW POOLS reports it ("" when not read)

    @property
    def sv_total(self) -> int:
        """Server connections the pool holds (docs/semantics.md §3)."""
        return self.sv_active + self.sv_idle + self.sv_used + self.sv_tested + self.sv_login


@dataclass(frozen=True, slots=True)
class ServerActivitySample:
    """PostgreSQL's own count of connections from PgBouncer (``pg_stat_activity``) at ``at``."""

    at: float
    connections: int


@dataclass(frozen=True, slots=True)
class PoolStats:
    """PgBouncer's ``SHOW STATS`` counters (totals since PgBouncer started) for the app database."""

    at: float
    total_xact_count: int
    total_query_count: int


@dataclass(frozen=True, slots=True)
class PoolLoadPhase:
    """One load on the pool: who drove it, when, and what its clients saw.

    ``direct``: client connections straight to PgBouncer, each a transaction per statement;
    ``backends``: HTTP clients on the backends' database-backed API, so PgBouncer's clients
    are the backends' own connection pools.
    """

    name: str
    started_at: float
    ended_at: float
    clients: int                # concurrent load clients (connections, or HTTP clients)
    requests: int               # transactions (direct) or HTTP answers (backends) seen
    errors: int                 # failed transactions, or non-200 answers and no answer
    stats_before: PoolStats | None = None
    stats_after: PoolStats | None = None
    # HTTP status (or the error's type) -> count; empty for the direct load.
    statuses: tuple[tuple[str, int], ...] = ()
    own_connections: int = 0    # the sampler's own sessions pg_stat_activity counts


@dataclass(frozen=True, slots=True)
class HeaderSample:
    """One response's status and headers, as a client received them."""

    url: str
    status: int
    headers: tuple[tuple[str, str], ...]    # (name, value) as received; names in any case

    def header(self, name: str) -> str | None:
        """The first value of a header, matched case-insensitively; None when absent."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


@dataclass(frozen=True, slots=True)
class TlsObservation:
    """The certificate NGINX served on HTTPS, as a client read it, judged against the lab's CA."""

    host: str                   # the name the client connected with (SNI)
    issuer: str                 # RFC 4514 strings
    subject: str
    san: tuple[str, ...]        # DNS names and IP addresses of subjectAltName
    self_signed: bool
    verified_with_lab_ca: bool  # signed by the lab CA's key (not merely naming it as issuer)
    not_after_epoch: float
    not_before_epoch: float = 0.0
    observed_at: float | None = None


@dataclass(frozen=True, slots=True)
class JobRun:
    """One row of the backends' ``job_runs`` table: a scheduled job executed by one node.

    ``finished_at`` is None while the run lasts, and forever when its node died mid-run:
    such a run's outcome is unknown (``outcome`` stays ``running``).
    """

    id: int
    job: str
    node: str
    fencing_token: int | None   # None when the backend runs without locks
    tick: int                   # floor(scheduled time / job interval)
    started_at: float
    finished_at: float | None
    outcome: str                # running, ok, fenced, database_unavailable


@dataclass(frozen=True, slots=True)
class FencingRejection:
    """One row of ``fencing_rejections``: a side effect refused for a stale fencing token."""

    job: str
    node: str
    token: int
    last_token: int             # the token the resource had already accepted
    at: float


WATCHED = "watched"             # HealthSample.expectation of a watcher's samples


@dataclass(frozen=True, slots=True)
class LockSample:
    """What Redis (the lock store) held as one job's lock, sampled during a run.

    Redis answered at some moment between ``sent_at`` and ``received_at``; ``holder`` is
    None when no lock was held. One record per job per sample.
    """

    sent_at: float
    received_at: float
    job: str
    holder: str | None
    fencing_token: int | None


@dataclass(frozen=True, slots=True)
class HealthSample:
    """One backend's answer on one health endpoint, asked directly (docker exec or a client
    container on the lab network, never through NGINX)."""

    at: float                   # when the answer (or the error) came
    node: str
    path: str
    status: int | None          # None: no answer
    body: str                   # the first line of the body, or the error
    expectation: str            # the state the scenario put the lab in (healthy, redis-down, ...),
                                # or WATCHED: a watcher's sample, judged by its transitions
    sent_at: float | None = None  # when the request left (watched samples)


@dataclass(frozen=True, slots=True)
class HealthWatch:
    """One health watcher: the backend it polled, how often, and the span its samples cover."""

    node: str
    interval_s: float           # the pause between one path's requests while answers come
    started_at: float           # the first request sent
    ended_at: float             # the last answer or error
    samples: int
    note: str = ""              # how it ended, and lines it printed that were not samples


@dataclass(frozen=True, slots=True)
class PortBinding:
    """One host port Docker forwards to a container port, as Docker reports it."""

    container_port: str         # "80/tcp"
    host_ip: str                # "127.0.0.1"; "0.0.0.0" or "::" is every interface
    host_port: int              # 0: not assigned yet (a container that is not running)


@dataclass(frozen=True, slots=True)
class NodeExposure:
    """What one of the lab's containers publishes on the host, read from Docker at ``at``."""

    at: float
    node: str                   # node name, or the helper's name for a sidecar
    role: str                   # the node's role; "" for helpers (sidecars, clients)
    status: str                 # Docker's state: running, exited, ...
    network_mode: str           # "host" shares the host's network: every port is exposed
    bindings: tuple[PortBinding, ...]


@dataclass(frozen=True, slots=True)
class PortConnect:
    """One TCP connect from the host to a published port on 127.0.0.1."""

    at: float
    node: str
    container_port: str
    host: str                   # always 127.0.0.1: the host talks to nothing else
    port: int
    connected: bool
    detail: str = ""            # the error when it did not connect


@dataclass
class History:
    """Everything recorded during one scenario run; append-only while the run lasts."""

    requests: list[RequestRecord] = field(default_factory=list)
    faults: list[FaultEvent] = field(default_factory=list)
    access_log: list[AccessLogEntry] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    job_runs: list[JobRun] = field(default_factory=list)
    health_samples: list[HealthSample] = field(default_factory=list)
    health_watches: list[HealthWatch] = field(default_factory=list)
    fencing_rejections: list[FencingRejection] = field(default_factory=list)
    lock_samples: list[LockSample] = field(default_factory=list)
    # Rate limits, the connection pool and security headers (lab.checks.rate_limit, pool,
    # security); empty in scenarios that do not sample them.
    pool_samples: list[PoolSample] = field(default_factory=list)
    server_activity: list[ServerActivitySample] = field(default_factory=list)
    pool_stats: list[PoolStats] = field(default_factory=list)
    pool_phases: list[PoolLoadPhase] = field(default_factory=list)
    header_samples: list[HeaderSample] = field(default_factory=list)
    tls: list[TlsObservation] = field(default_factory=list)
    exposure: list[NodeExposure] = field(default_factory=list)
    port_connects: list[PortConnect] = field(default_factory=list)

    def mark(self, name: str, at: float) -> None:
        self.marks.append(Mark(name, at))

    def mark_at(self, name: str) -> float | None:
        """The time of the last mark with this name, if any."""
        for mark in reversed(self.marks):
            if mark.name == name:
                return mark.at
        return None

    def fault_windows(self,
                      target: str | None = None) -> list[tuple[FaultEvent, FaultEvent | None]]:
        """Inject/heal pairs in time order (heal None while the fault is still active)."""
        pairs: list[tuple[FaultEvent, FaultEvent | None]] = []
        open_: dict[tuple[str, str], int] = {}
        for event in sorted(self.faults, key=lambda e: e.at):
            if target is not None and event.target != target:
                continue
            key = (event.fault, event.target)
            if event.phase is FaultPhase.INJECT:
                open_[key] = len(pairs)
                pairs.append((event, None))
            elif key in open_:
                index = open_.pop(key)
                pairs[index] = (pairs[index][0], event)
        return pairs


@dataclass(frozen=True, slots=True)
class ContainerSample:
    """One container's resource counters, read from Docker's stats API at ``at``.

    ``cpu_s`` is the CPU time used since the container started (cumulative), so the share of a
    core between two samples is their difference over the time between them."""

    at: float
    node: str                   # node name, or "k6" for the load generator
    cpu_s: float
    memory_bytes: int           # usage less the inactive page cache, as `docker stats` shows
    throttled_periods: int = 0  # CFS periods in which the quota ran out (cumulative)
    periods: int = 0            # CFS periods with the quota in force (cumulative)


@dataclass(frozen=True, slots=True)
class DroppedIteration:
    """An iteration the load generator could not start at its time (k6: no free VU)."""

    at: float
    client: str                 # the k6 scenario it belonged to
