"""Running a scenario: steady state, traffic and timed faults, heal, steady state, checks.

Healing runs in every case (a failed check, an exception, Ctrl-C, SIGTERM): every injected
fault is healed in ``finally``, and a run killed with SIGKILL is repaired by the next run's
``heal_leftovers``. Checks run on the recorded history only; they never touch Docker.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import httpx
import psycopg
from redis import RedisError

from lab.checks import (
    CheckResult,
    FailureMode,
    Verdict,
    check_availability,
    check_distribution,
    check_durability,
    check_ejection,
    check_latency,
    check_readmission,
    combine,
    ready_mark,
)
from lab.checks.dependency import check_fail_fast, check_recovery
from lab.checks.exposure import check_exposure, documented_ports
from lab.checks.health import PATHS as HEALTH_PATHS
from lab.checks.health import (
    check_detailed_follows_dependency,
    check_health_contract,
    check_ready_at_startup,
    check_ready_while_draining,
)
from lab.checks.locks import (
    JOBS,
    check_fencing,
    check_jobs_paused_while_redis_down,
    check_lock_after_store_restart,
    check_lock_exclusivity,
    check_lock_holders,
    check_lock_takeover,
)
from lab.checks.pool import check_pool_bound, parse_pgbouncer_ini
from lab.checks.rate_limit import (
    check_rate_limit,
    check_rate_limit_headers,
    predict_checklist_experiments,
)
from lab.checks.security import check_security_headers, check_tls, hsts_max_age, required_headers
from lab.config import BackendConfig, PgBouncerConfig, RedisConfig
from lab.errors import LabError
from lab.faults import Fault, FaultSpec, heal_leftovers, make_fault
from lab.history import FaultEvent, FaultPhase, HealthSample, History, Outcome, PoolLoadPhase
from lab.scenarios.model import (
    CheckSpec,
    FaultRef,
    HealStep,
    InjectStep,
    ProbeStep,
    Scenario,
    WaitStep,
    WaitUntilAcquiredStep,
    WaitUntilServedStep,
    WatchSpec,
    WatchStep,
    evaluate_duration,
)
from lab.topology.lab import Lab
from lab.topology.nginx_conf import NginxPolicy, UpstreamPolicy, parse_nginx_policy
from lab.topology.render import BACKEND_PORT, render_pgbouncer_ini
from lab.workload import TrafficRun, TrafficSpec, parse_access_log
from lab.workload.backend_load import run_backend_load
from lab.workload.jobs import LockSampler, read_fencing_rejections, read_job_runs, read_locks, redis_client
from lab.workload.health_watch import HealthWatcher, HealthWatchSpec
from lab.workload.pool_load import PoolSampler, max_client_conn_error, run_pool_load
from lab.workload.security_probe import connect_published, observe_tls, sample_headers

WRITE_MARKER = "lab-write"
FAILURE_MODES = {"kill": FailureMode.UNREACHABLE, "stop": FailureMode.UNREACHABLE,
                 "restart": FailureMode.UNREACHABLE, "partition": FailureMode.UNREACHABLE,
                 "freeze": FailureMode.FROZEN}
LIFECYCLE = ("kill", "stop", "freeze", "restart")
LOCK_CHECKS = ("lock_exclusivity", "fencing", "lock_takeover", "jobs_paused", "lock_holders",
               "lock_after_store_restart")


def db_budget_s(backend: BackendConfig) -> float:
    """How long a backend request waits for the database: the backend's own rule
    (images/backend: max(1, min(2, 2 x LAB_DEPENDENCY_TIMEOUT_S)))."""
    return max(1.0, min(2.0, 2 * backend.dependency_timeout_s))


@dataclass(frozen=True)
class Progress:
    """One live progress line: where the run is and what the traffic saw so far."""

    phase: str
    elapsed_s: float
    sent: int
    ok: int
    failed: int
    unknown: int


@dataclass(frozen=True)
class RunResult:
    """Everything a run produced: the verdict, each check, and the full history."""

    scenario: str
    description: str
    lab: str
    seed: int
    started_at: float
    finished_at: float
    verdict: Verdict
    checks: tuple[CheckResult, ...]
    history: History
    faults: tuple[FaultSpec, ...]
    notes: tuple[str, ...] = ()
    durations: tuple[tuple[str, float], ...] = ()   # the duration names and their values


@dataclass
class _State:
    history: History = field(default_factory=History)
    active: dict[tuple[str, str], Fault] = field(default_factory=dict)
    faults: list[FaultSpec] = field(default_factory=list)
    added_latency_s: float = 0.0      # the largest round trip a latency fault injected
    notes: list[str] = field(default_factory=list)
    phase: str = "starting"
    watchers: list[HealthWatcher] = field(default_factory=list)


class Runner:
    """Runs one scenario against one running lab."""

    def __init__(self, lab: Lab, scenario: Scenario, *, seed: int | None = None,
                 on_progress: Callable[[Progress], None] = lambda progress: None,
                 ready_timeout_s: float = 60.0, expected_policy: NginxPolicy | None = None,
                 expected_backend: BackendConfig | None = None,
                 expected_pgbouncer: PgBouncerConfig | None = None,
                 expected_redis: RedisConfig | None = None):
        self.lab = lab
        self.scenario = scenario
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        self.rng = random.Random(self.seed)
        self.on_progress = on_progress
        self.ready_timeout_s = ready_timeout_s
        # Normally the checks expect what the running nginx.conf says. A claimed policy
        # (the checklist's) can be given instead: negative controls run a broken NGINX and
        # judge it against what it should have been.
        self._expected_policy = expected_policy
        self._expected_backend = expected_backend
        self._expected_pgbouncer = expected_pgbouncer
        self._expected_redis = expected_redis
        self._traffic: TrafficRun | None = None
        self._t0 = time.monotonic()
        self._state = _State()

    # -- derived values -------------------------------------------------------------------

    def _durations(self, policy: UpstreamPolicy) -> dict[str, float]:
        rate = sum(stream.rate for stream in self.scenario.traffic) or 1.0
        backend = self.lab.config.backend
        return {"fail_timeout": policy.fail_timeout_s, "connect_timeout": policy.connect_timeout_s,
                "read_timeout": policy.read_timeout_s, "max_fails": float(policy.max_fails),
                "rate": rate, "interval": len(policy.servers) / rate,
                "job_interval": backend.job_interval_s, "lock_ttl": backend.lock_ttl_s,
                "job_duration": backend.job_duration_s,
                "server_login_retry": float((self._expected_pgbouncer or self.lab.config.pgbouncer).server_login_retry_s),
                "db_budget": db_budget_s(self._expected_backend or backend),
                "dependency_timeout": (self._expected_backend or backend).dependency_timeout_s,
                "drain": (self._expected_backend or backend).drain_s}

    def _poll_locks(self, timeout_s: float, done: Callable[[dict[str, tuple[str, int | None]]], str | None],
                    what: str) -> str:
        """Read the job locks from Redis every 50 ms until ``done(locks)`` names a backend;
        ``locks`` maps each held job to its holder and fencing token."""
        deadline = time.monotonic() + timeout_s
        with redis_client(self.lab.endpoints.redis_url) as client:
            while time.monotonic() < deadline:
                try:
                    locks = {job: lock for job, lock in read_locks(client, JOBS).items()
                             if lock[0] in self.lab.roles}
                    if (node := done(locks)) is not None:
                        return node
                except RedisError:
                    pass
                time.sleep(0.05)
        raise LabError(f"{what} within {timeout_s:.0f} s",
                       hint="is locking on, and does the job run (LAB_JOB_INTERVAL_S)?")

    def _lock_holder(self, job: str, timeout_s: float) -> str:
        """The backend holding ``job``'s lock now (or as soon as one does)."""
        return self._poll_locks(timeout_s, lambda locks: locks[job][0] if job in locks else None,
                                f"no backend held the lock of job {job!r}")

    def _wait_until_acquired(self, job: str, timeout_s: float) -> str:
        """The backend that takes ``job``'s lock anew: a lock held at the first answer
        belongs to a run already under way and does not count."""
        self._state.phase = f"waiting for a new holder of {job}"
        self._tick()
        baseline: list[int | None] = []

        def fresh(locks: dict[str, tuple[str, int | None]]) -> str | None:
            holder, token = locks.get(job, (None, None))
            if not baseline:
                baseline.append(token)
                return None
            return holder if holder is not None and token != baseline[0] else None

        return self._poll_locks(timeout_s, fresh, f"no backend newly took the lock of job {job!r}")

    def _resolve_target(self, target: str) -> str:
        """A node name, a seeded random pick (``random``, ``random:<role>``) or the current
        holder of a job's lock (``holder:<job>``)."""
        if target.startswith("holder:"):
            return self._lock_holder(target.split(":", 1)[1], 3 * self.lab.config.backend.job_interval_s + 5)
        if target == "random":
            return self.rng.choice(sorted(n for n, r in self.lab.roles.items() if r != "nginx"))
        if target.startswith("random:"):
            role = target.split(":", 1)[1]
            return self.rng.choice(sorted(n for n, r in self.lab.roles.items() if r == role))
        self.lab.container(target)  # UnknownNode for a typo
        return target

    def _fault_spec(self, ref: FaultRef) -> FaultSpec:
        return FaultSpec(kind=ref.fault, target=self._resolve_target(ref.target), peers=ref.peers,
                         direction=ref.direction, percent=ref.percent, rate=ref.rate,
                         delay_ms=ref.delay_ms, jitter_ms=ref.jitter_ms, ports=ref.ports, seed=self.seed)

    # -- progress -------------------------------------------------------------------------

    def _tick(self) -> None:
        sent = ok = failed = unknown = 0
        if self._traffic is not None:
            sent, ok, failed, unknown = self._traffic.counts
        self.on_progress(Progress(self._state.phase, time.monotonic() - self._t0, sent, ok, failed, unknown))

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + max(0.0, seconds)
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(0.2, left))
            self._tick()

    # -- steps ----------------------------------------------------------------------------

    def _inject(self, ref: FaultRef) -> None:
        spec = self._fault_spec(ref)
        fault = make_fault(spec, self.lab)
        self._state.phase = f"inject {spec.kind} {spec.target}"
        self._tick()
        started = time.time()
        detail = fault.inject()
        self._state.history.faults.append(FaultEvent(spec.kind, spec.target, FaultPhase.INJECT,
                                                     time.time(), started, detail))
        self._state.active[(spec.kind, spec.target)] = fault
        self._state.faults.append(spec)
        self._state.added_latency_s = max(self._state.added_latency_s, getattr(fault, "round_trip_s", 0.0))

    def _heal(self, key: tuple[str, str]) -> None:
        fault = self._state.active.pop(key, None)
        if fault is None:
            raise LabError(f"heal of {key[0]} on {key[1]}: no such fault is active")
        kind, target = key
        self._state.phase = f"heal {kind} {target}"
        self._tick()
        started = time.time()
        detail = fault.heal()
        self._state.history.faults.append(FaultEvent(kind, target, FaultPhase.HEAL, time.time(), started, detail))
        if kind in LIFECYCLE:
            self.lab.wait_ready(target, self.ready_timeout_s)
            self._state.history.mark(ready_mark(target), time.time())

    def _heal_ref(self, ref: FaultRef) -> None:
        target = ref.target
        if target.startswith(("random", "holder:")):
            # A dynamic target was resolved at inject: heal the active fault of that kind.
            matches = [key for key in self._state.active if key[0] == ref.fault]
            if not matches:
                raise LabError(f"heal of {ref.fault}: no such fault is active")
            target = matches[-1][1]
        self._heal((ref.fault, target))

    def _wait_until_served(self, node: str, timeout_s: float) -> None:
        self._state.phase = f"waiting for {node} to serve"
        since = time.time()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            records = self._traffic.records if self._traffic else []
            if any(r.backend == node and r.outcome is Outcome.OK and r.sent_at >= since for r in records):
                return
            self._sleep(0.2)
        self._state.notes.append(f"{node} did not serve within {timeout_s:.1f} s")

    # -- the run --------------------------------------------------------------------------

    def _traffic_specs(self, planned_s: float) -> list[TrafficSpec]:
        specs = []
        for stream in self.scenario.traffic:
            headers: tuple[tuple[str, str], ...] = ()
            body = None
            if stream.writes or stream.auth:
                headers = (("Authorization", f"Bearer {self._login()}"), ("Content-Type", "application/json"))
            if stream.writes:
                body = ('{"conversation_id": 1, "body": "' + WRITE_MARKER + ' {request_id}"}').encode()
            specs.append(TrafficSpec(rate_per_s=stream.rate, duration_s=stream.duration_s or planned_s,
                                     method=stream.method,
                                     path=stream.path, timeout_s=stream.timeout_s, client=stream.client,
                                     headers=headers, body=body))
        return specs

    def _login(self) -> str:
        with httpx.Client(base_url=self.lab.endpoints.nginx_http, timeout=5) as client:
            response = client.post("/api/auth/login", json={"email": "user1@lab.test",
                                                            "password": self.lab.secrets.seed_password})
        if response.status_code != 200:
            raise LabError(f"login for the write stream failed: {response.status_code} {response.text[:200]}")
        return response.json()["token"]

    def _planned_duration(self, names: dict[str, float]) -> float:
        total = 0.0
        for step in self.scenario.steps:
            if isinstance(step, WaitStep):
                total += evaluate_duration(step.wait, names)
            elif isinstance(step, WaitUntilServedStep):
                total += evaluate_duration(step.wait_until_served.timeout, names)
            elif isinstance(step, WaitUntilAcquiredStep):
                total += evaluate_duration(step.wait_until_acquired.timeout, names)
            elif isinstance(step, WatchStep):
                continue  # a watch runs alongside the other steps
            else:
                total += self.ready_timeout_s / 4  # heals wait for readiness
        return total

    def _quiesce(self, policy: UpstreamPolicy, addresses: dict[str, str]) -> None:
        """Wait until NGINX has forgotten earlier failures, so this run starts from zero.

        A failure counts against a backend until fail_timeout has passed *and* a request to
        it succeeded (a success within fail_timeout does not reset the count), so a run right
        after another (or after a hand-made fault) would see a backend ejected early. The
        readiness probe through NGINX that follows supplies the resetting successes."""
        failing = {"502", "504", *(c.removeprefix("http_") for c in policy.next_upstream if c.startswith("http_"))}
        since = time.time() - policy.fail_timeout_s - 2
        entries = parse_access_log(self.lab.logs("nginx", tail="all", since=since), addresses)
        last = max((e.msec for e in entries if failing & set(e.upstream_statuses)), default=None)
        if last is not None:
            # NGINX keeps failure times in whole seconds: one more second covers the rounding.
            wait = last + policy.fail_timeout_s + 1 - time.time()
            if wait > 0:
                self._state.phase = "waiting for NGINX to forget earlier failures"
                self._state.notes.append(f"waited {wait:.1f} s for failures from before the run "
                                         "to leave NGINX's fail_timeout window")
                self._sleep(wait)

    def run(self) -> RunResult:
        """Run the scenario; faults are healed whatever happens."""
        state = self._state
        started_at = time.time()
        state.phase = "steady state before"
        self._tick()
        state.notes.extend(heal_leftovers(self.lab))
        self._nginx = self._expected_policy or parse_nginx_policy(self.lab.nginx_conf())
        policy = self._nginx.upstream
        names = self._names = self._durations(policy)
        # NGINX logs upstreams as ip:port; the checks want node names.
        addresses = {f"{ip}:{BACKEND_PORT}": node for ip, node in self.lab.addresses().items()}
        self._quiesce(policy, addresses)
        self.lab.wait_all_ready(self.ready_timeout_s)
        state.history.mark("start", time.time())
        sampler = None
        try:
            if any(spec.name == "lock_holders" for spec in self.scenario.checks):
                # Redis's view of the lock holders, all along the steps (bounded: stopped in
                # finally, and by its own deadline).
                sampler = LockSampler(lambda: self.lab.endpoints.redis_url, JOBS,
                                      max_duration_s=self._planned_duration(names) + 60)
                sampler.start()
            if self.scenario.traffic:
                # The traffic outlasts the planned steps; it is finished when they end.
                planned = self._planned_duration(names) + 30
                self._traffic = TrafficRun(self.lab.endpoints.nginx_http, self._traffic_specs(planned), self.seed)
                self._traffic.start()
            for step in self.scenario.steps:
                if isinstance(step, InjectStep):
                    self._inject(step.inject)
                elif isinstance(step, HealStep):
                    keys = list(state.active) if step.heal == "all" else None
                    for key in keys or []:
                        self._heal(key)
                    if keys is None:
                        self._heal_ref(step.heal)  # type: ignore[arg-type]
                elif isinstance(step, WaitStep):
                    state.phase = f"wait {step.wait}"
                    self._sleep(evaluate_duration(step.wait, names))
                elif isinstance(step, WaitUntilServedStep):
                    node = self._resolve_target(step.wait_until_served.node)
                    self._wait_until_served(node, evaluate_duration(step.wait_until_served.timeout, names))
                elif isinstance(step, WaitUntilAcquiredStep):
                    spec = step.wait_until_acquired
                    node = self._wait_until_acquired(spec.job, evaluate_duration(spec.timeout, names))
                    state.history.mark(f"acquired:{spec.job}:{node}", time.time())
                elif isinstance(step, ProbeStep) and step.probe == "security":
                    self._probe_security(state.history)
                elif isinstance(step, ProbeStep) and step.probe == "exposure":
                    self._probe_exposure(state.history)
                elif isinstance(step, ProbeStep) and step.probe == "pool":
                    self._probe_pool(state.history)
                elif isinstance(step, ProbeStep) and step.probe == "pool-backends":
                    self._probe_pool_backends(state.history)
                elif isinstance(step, ProbeStep) and step.probe.startswith("health:"):
                    self._probe_health(state.history, step.probe.split(":", 1)[1])
                elif isinstance(step, ProbeStep):
                    state.notes.append(self._probe_second_client())
                elif isinstance(step, WatchStep):
                    self._watch(step.watch, names)
        finally:
            if sampler is not None:
                sampler.stop()
                state.history.lock_samples.extend(sampler.samples)
                state.notes.append(f"lock samples: {len(sampler.samples) // len(JOBS)} answered, "
                                   f"{sampler.errors} failed")
            for key in list(state.active):
                try:
                    self._heal(key)
                except Exception as exc:  # noqa: BLE001 - keep healing the others
                    state.notes.append(f"heal of {key[0]} on {key[1]} failed: {exc}")
            self._end_watches()
            if self._traffic is not None:
                state.phase = "draining traffic"
                self._tick()
                self._traffic.finish()
        state.history.mark("end", time.time())
        state.phase = "steady state after"
        self._tick()
        self.lab.wait_all_ready(self.ready_timeout_s)
        state.history.requests.extend(self._traffic.records if self._traffic else [])
        log = self.lab.logs("nginx", tail="all", since=started_at - 1)
        state.history.access_log.extend(e for e in parse_access_log(log, addresses) if e.msec >= started_at)
        if any(spec.name in LOCK_CHECKS for spec in self.scenario.checks):
            self._read_job_records(state.history)
        state.phase = "checking"
        self._tick()
        checks = tuple(self._check(spec, policy) for spec in self.scenario.checks)
        if any(spec.name == "rate_limit" for spec in self.scenario.checks):
            auth, api = self._nginx.rate_limit_for("/api/auth/"), self._nginx.rate_limit_for("/api/")
            if auth and api:
                # What NGINX's algorithm predicts for the checklist's own experiments.
                state.notes.extend(predict_checklist_experiments(auth[0], api[0]))
        return RunResult(
            scenario=self.scenario.name, description=self.scenario.description, lab=self.lab.name,
            seed=self.seed, started_at=started_at, finished_at=time.time(),
            verdict=combine(c.verdict for c in checks), checks=checks, history=state.history,
            faults=tuple(state.faults), notes=tuple(state.notes), durations=tuple(names.items()),
        )

    def _probe_security(self, history: History) -> None:
        """Answers of every kind over HTTP and HTTPS, and the served certificate."""
        self._state.phase = "sampling headers and TLS"
        self._tick()
        code, ca = self.lab.exec("nginx", ["cat", "/etc/lab/tls/ca.crt"])
        if code != 0:
            raise LabError(f"cannot read the lab CA from nginx: {ca.strip()}")
        endpoints = self.lab.endpoints
        history.header_samples.extend(sample_headers(endpoints.nginx_http))
        history.header_samples.extend(sample_headers(endpoints.nginx_https, ca_pem=ca.encode()))
        history.tls.append(observe_tls(endpoints.nginx_https, self.lab.config.nginx.server_name, ca.encode()))

    def _probe_exposure(self, history: History) -> None:
        """Every lab container's published ports (from Docker), and a TCP connect to each on 127.0.0.1."""
        self._state.phase = "reading published ports"
        self._tick()
        exposures = self.lab.exposure()
        history.exposure.extend(exposures)
        history.port_connects.extend(connect_published(exposures))

    def _pool_sampler(self) -> PoolSampler:
        endpoints, config = self.lab.endpoints, self.lab.config
        return PoolSampler(endpoints.pgbouncer_admin_dsn, endpoints.postgres_dsn, config.postgres.user,
                           config.postgres.database)

    def _record_pool(self, history: History, sampler: PoolSampler, phase: PoolLoadPhase) -> None:
        history.pool_samples.extend(sampler.samples)
        history.server_activity.extend(sampler.activity)
        history.pool_stats.extend(s for s in (phase.stats_before, phase.stats_after) if s is not None)
        history.pool_phases.append(phase)

    def _probe_pool(self, history: History, clients: int = 300, duration_s: float = 8.0) -> None:
        """Many more clients than the pool through PgBouncer, sampled all along; then the
        exact error a client past max_client_conn gets."""
        self._state.phase = f"pool: {clients} clients"
        self._tick()
        endpoints, config = self.lab.endpoints, self.lab.config
        with self._pool_sampler() as sampler:
            before = sampler.stats()
            load = run_pool_load(endpoints.pgbouncer_dsn, clients=clients, duration_s=duration_s)
            ended = time.time()
            # Waiters drain after the load ends; the last samples must show it.
            self._sleep(1.0)
            after = sampler.stats()
        self._record_pool(history, sampler, PoolLoadPhase(
            "direct", ended - load.duration_s, ended, load.clients, load.transactions, load.errors,
            before, after, own_connections=sampler.own_connections))
        self._state.notes.append(f"pool load: {load.clients} clients, {load.transactions} transactions "
                                 f"({load.transactions_per_s:.0f}/s), {load.errors} errors")
        self._state.phase = "pool: max_client_conn"
        self._tick()
        error = max_client_conn_error(endpoints.pgbouncer_dsn, config.pgbouncer.max_client_conn)
        self._state.notes.append(f"a client past max_client_conn ({config.pgbouncer.max_client_conn}) gets: {error}")

    def _probe_pool_backends(self, history: History, clients: int = 90, duration_s: float = 6.0) -> None:
        """Many HTTP clients on the backends' database-backed API, from a container on the lab
        network (through NGINX the api zone would reject one address's concurrent requests),
        while PgBouncer and PostgreSQL are sampled: PgBouncer's clients are now the backends' pools."""
        self._state.phase = f"pool: {clients} HTTP clients on the backends"
        self._tick()
        token = self._login()
        backends = [node for node, role in self.lab.roles.items() if role == "backend"]
        with self._pool_sampler() as sampler:
            before = sampler.stats()
            load = run_backend_load(self.lab.run_client, backends, BACKEND_PORT, token,
                                    clients=clients, duration_s=duration_s)
            self._sleep(1.0)
            after = sampler.stats()
        self._record_pool(history, sampler, PoolLoadPhase(
            "backends", load.started_at, load.ended_at, load.clients, load.requests, load.errors,
            before, after, load.statuses, sampler.own_connections))
        statuses = ", ".join(f"{status} x{count}" for status, count in load.statuses)
        self._state.notes.append(f"pool load through the backends: {load.clients} HTTP clients, "
                                 f"{load.requests} answers ({load.requests_per_s:.0f}/s): {statuses}")

    def _probe_health(self, history: History, expectation: str) -> None:
        """Every backend's four health endpoints, asked directly (docker exec, not NGINX)."""
        self._state.phase = f"health probe ({expectation})"
        self._tick()
        script = "; ".join(f"lab-probe {path}" for path in HEALTH_PATHS)

        def one(node: str) -> list[HealthSample]:
            result = self.lab.exec(node, ["sh", "-c", script])
            lines = result.output.strip().splitlines()
            samples = []
            for path, line in zip(HEALTH_PATHS, lines + [""] * len(HEALTH_PATHS), strict=False):
                status, _, body = line.partition(" ")
                samples.append(HealthSample(time.time(), node, path, int(status) if status.isdigit() else None,
                                            body if status.isdigit() else line, expectation))
            return samples

        backends = [node for node, role in self.lab.roles.items() if role == "backend"]
        with ThreadPoolExecutor(max_workers=len(backends)) as pool:
            for samples in pool.map(one, backends):
                history.health_samples.extend(samples)

    def _watch(self, spec: WatchSpec, names: dict[str, float]) -> None:
        """Start a health watcher on a backend; returns once it has had an answer on every path."""
        node = self._resolve_target(spec.node)
        if self.lab.roles.get(node) != "backend":
            raise LabError(f"watch {node}: only backends have health endpoints to watch")
        self._state.phase = f"starting a health watch on {node}"
        self._tick()
        # Longer than the slowest health answer: each dependency check waits the timeout at most.
        timeout = 2 * self.lab.config.backend.dependency_timeout_s + 1
        watcher = HealthWatcher(self.lab, HealthWatchSpec(node, BACKEND_PORT, spec.interval_s,
                                                          evaluate_duration(spec.max_duration, names), timeout))
        watcher.start()
        self._state.watchers.append(watcher)

    def _end_watches(self) -> None:
        """Stop every health watcher and add what it saw to the history."""
        for watcher in self._state.watchers:
            try:
                result = watcher.stop()
            except LabError as exc:
                self._state.notes.append(str(exc))
                continue
            self._state.history.health_samples.extend(result.samples)
            self._state.history.health_watches.append(result.watch)
            self._state.notes.append(f"health watch on {result.watch.node}: {result.watch.samples} samples "
                                     f"over {result.watch.ended_at - result.watch.started_at:.1f} s "
                                     f"({result.watch.note})")
        self._state.watchers.clear()

    def _probe_second_client(self, burst: int = 8, lead_s: float = 2.0, gap_s: float = 0.05) -> str:
        """A login burst from the host, then one from a container on the lab network (its own
        address, so its own limit_req key) ``gap_s`` later.

        Limits kept per client give the second burst a fresh allowance; a zone keyed on
        anything shared (the server name, a header) has just been filled by the first burst
        and rejects the second. Both start on the shared wall clock (containers read the
        host's): ``lead_s`` covers the container's start, so the gap does not depend on it.
        """
        self._state.phase = "second client"
        self._tick()
        fire_at = time.time() + lead_s
        # Container to container on the lab's own network: NGINX sees the sidecar's address.
        script = (
            "import socket, time, urllib.request, urllib.error, concurrent.futures as f\n"
            "def one(_):\n"
            "    req = urllib.request.Request('http://nginx/api/auth/login', data=b'{}', method='POST')\n"
            "    try:\n"
            "        return urllib.request.urlopen(req, timeout=5).status\n"
            "    except urllib.error.HTTPError as e:\n"
            "        return e.code\n"
            f"time.sleep(max(0.0, {fire_at + gap_s!r} - time.time()))\n"
            f"late = time.time() - {fire_at + gap_s!r}\n"
            f"with f.ThreadPoolExecutor({burst}) as pool:\n"
            f"    statuses = sorted(pool.map(one, range({burst})))\n"
            "print(socket.gethostbyname(socket.gethostname()), round(late * 1000), statuses)\n")
        with ThreadPoolExecutor(max_workers=1) as host:
            first = host.submit(self._host_login_burst, burst, fire_at)
            result = self.lab.run_client(["python3", "-c", script], timeout_s=lead_s + 30)
            host_statuses = first.result()
        if result.exit_code != 0:
            raise LabError(f"the second client failed: {result.output.strip()[-300:]}")
        address, late_ms, statuses = result.output.strip().split(" ", 2)
        lateness = f", {late_ms} ms late" if int(late_ms) > 0 else ""
        return (f"login bursts of {burst}: the host's (its own address) statuses {host_statuses}; "
                f"{gap_s * 1000:.0f} ms later the second client's ({address}{lateness}) {statuses}")

    def _host_login_burst(self, burst: int, at: float) -> list[int | str]:
        """``burst`` concurrent logins through NGINX's published port, sent at ``at`` (epoch s)."""
        with httpx.Client(base_url=self.lab.endpoints.nginx_http, timeout=5,
                          limits=httpx.Limits(max_connections=burst)) as client:
            time.sleep(max(0.0, at - time.time()))

            def one(_: int) -> int | str:
                try:
                    return client.post("/api/auth/login", content=b"{}").status_code
                except httpx.HTTPError as exc:
                    return type(exc).__name__
            with ThreadPoolExecutor(max_workers=burst) as pool:
                return sorted(pool.map(one, range(burst)), key=str)

    def _max_run_s(self) -> float:
        """The longest a job run can last: its work plus a bounded wait for each database call."""
        backend = self.lab.config.backend
        return backend.job_duration_s + 4 * backend.dependency_timeout_s + 1

    def _read_job_records(self, history: History) -> None:
        """Job runs and fencing rejections since the run started, read from PostgreSQL."""
        self._state.phase = "reading job records"
        since = history.mark_at("start") or 0.0
        end = history.mark_at("end") or time.time()
        # A run in progress at the end records its finish within max_run_s; runs that began
        # after the end are outside the observation and left out.
        self._sleep(end + self._max_run_s() - time.time())
        history.job_runs.extend(run for run in read_job_runs(self.lab.endpoints.postgres_dsn, since)
                                if run.started_at <= end)
        history.fencing_rejections.extend(read_fencing_rejections(self.lab.endpoints.postgres_dsn, since))

    # -- checks ---------------------------------------------------------------------------

    def _history_for(self, client: str | None) -> History:
        history = self._state.history
        if client is None:
            return history
        return replace(history, requests=[r for r in history.requests if r.client == client])

    def _mode_for(self, target: str | None) -> FailureMode | None:
        kinds = [f.kind for f in self._state.faults if target is None or f.target == target]
        return FAILURE_MODES.get(kinds[0]) if kinds else None

    def _stored_writes(self) -> frozenset[str]:
        """Request ids of the write-stream messages present in PostgreSQL (read directly)."""
        with psycopg.connect(self.lab.endpoints.postgres_dsn, autocommit=True, connect_timeout=5) as conn:
            rows = conn.execute("SELECT body FROM messages WHERE body LIKE %s", (f"{WRITE_MARKER} %",)).fetchall()
        return frozenset(body.split(" ", 1)[1] for (body,) in rows)

    def _check(self, spec: CheckSpec, policy: UpstreamPolicy) -> CheckResult:
        history = self._history_for(spec.client)
        rate = sum(s.rate for s in self.scenario.traffic) or 1.0
        tolerance = {} if spec.tolerance_s is None else {"tolerance_s": spec.tolerance_s}
        target = self._resolved(spec.target)
        if spec.name == "ejection":
            mode = self._mode_for(target) or FailureMode.UNREACHABLE
            return check_ejection(history, policy, target, mode, rate, **tolerance)
        if spec.name == "readmission":
            return check_readmission(history, policy, target, rate, **tolerance)
        if spec.name == "distribution":
            window = None
            if spec.during == "steady":
                first = min((f.at for f in history.faults), default=None)
                window = (history.mark_at("start") or 0.0, first or time.time())
            return check_distribution(history, policy.servers, window, sigmas=spec.sigmas,
                                      min_requests=spec.min_requests)
        if spec.name == "availability":
            return check_availability(history, spec.slo)
        if spec.name == "durability":
            acknowledged = frozenset(r.request_id for r in history.requests
                                     if r.outcome is Outcome.OK and r.status == 201 and r.request_id)
            return check_durability(acknowledged, self._stored_writes())
        backend = self._expected_backend or self.lab.config.backend
        if spec.name == "lock_exclusivity":
            return check_lock_exclusivity(history, job_interval_s=backend.job_interval_s,
                                          lock_ttl_s=backend.lock_ttl_s, max_run_s=self._max_run_s())
        if spec.name == "fencing":
            return check_fencing(history, fencing_expected=True, max_run_s=self._max_run_s())
        if spec.name == "lock_takeover":
            return check_lock_takeover(history, target_node=target, lock_ttl_s=backend.lock_ttl_s,
                                       job_interval_s=backend.job_interval_s, **tolerance)
        if spec.name == "jobs_paused":
            return check_jobs_paused_while_redis_down(history, backend.job_interval_s)
        if spec.name == "lock_holders":
            return check_lock_holders(history, max_run_s=self._max_run_s())
        if spec.name == "lock_after_store_restart":
            redis = self._expected_redis or self.lab.config.redis
            return check_lock_after_store_restart(history, persistence=redis.persistence,
                                                  job_interval_s=backend.job_interval_s,
                                                  ready_mark=ready_mark("redis"))
        if spec.name == "tls":
            https = [sample for sample in history.header_samples if sample.url.startswith("https://")]
            return check_tls(history.tls[-1] if history.tls else None, self.lab.config.nginx.server_name,
                             https, hsts_max_age_s=hsts_max_age(self._nginx))
        if spec.name == "security_headers":
            return check_security_headers(history.header_samples, required_headers(self._nginx))
        if spec.name == "pool_bound":
            pgbouncer = self._expected_pgbouncer or self.lab.config.pgbouncer
            expected = parse_pgbouncer_ini(render_pgbouncer_ini(self.lab.config.model_copy(
                update={"pgbouncer": pgbouncer})), database=self.lab.config.postgres.database)
            phases = history.pool_phases
            own = max((phase.own_connections for phase in phases), default=1)
            stats = history.pool_stats
            return check_pool_bound(history.pool_samples, history.server_activity, expected.default_pool_size,
                                    expected.reserve_pool_size, stats[0] if stats else None,
                                    stats[-1] if stats else None, sum(phase.errors for phase in phases),
                                    own_connections=own, pool_mode=expected.pool_mode, phases=phases)
        if spec.name == "fail_fast":
            return check_fail_fast(history, servers=len(policy.servers), db_budget_s=self._names["db_budget"])
        if spec.name == "recovery":
            bound = evaluate_duration(spec.within, self._names)
            return check_recovery(history, bound_s=bound, derivation=f"bound {spec.within} = {bound:g} s "
                                  f"with {', '.join(f'{k} = {v:g}' for k, v in self._names.items() if k in str(spec.within))}")
        if spec.name == "exposure":
            return check_exposure(history.exposure, history.port_connects,
                                  documented_ports(self.lab.config.publish), self.lab.roles)
        if spec.name == "health_contract":
            return check_health_contract(history)
        if spec.name == "health_startup":
            return check_ready_at_startup(history)
        if spec.name == "health_drain":
            return check_ready_while_draining(history, drain_s=backend.drain_s, **tolerance)
        if spec.name == "health_detailed_timing":
            return check_detailed_follows_dependency(history, dependency_timeout_s=backend.dependency_timeout_s,
                                                     **tolerance)
        if spec.name == "rate_limit_headers":
            return check_rate_limit_headers(history.header_samples, self._nginx.rate_limit_status)
        if spec.name == "rate_limit":
            rules = self._nginx.rate_limit_for(spec.location or "")
            if not rules:
                return CheckResult("rate-limit", Verdict.UNKNOWN, f"no limit_req on {spec.location}",
                                   "-", "the expected configuration limits nothing there")
            result = check_rate_limit(history.access_log, rules[0], self._nginx.rate_limit_status,
                                      rules=self._nginx.rate_limits)
            return replace(result, name=f"rate-limit {spec.location}")
        return check_latency(history, policy, self._mode_for(None), outside_p99_bound_s=spec.outside_p99_bound_s,
                             added_latency_s=self._state.added_latency_s, **tolerance)

    def _resolved(self, target: str | None) -> str:
        """A check's target: the node a dynamic fault target resolved to at inject."""
        if target is None or not target.startswith(("random", "holder:")):
            return target or ""
        return self._state.faults[0].target if self._state.faults else target
