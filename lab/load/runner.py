"""A load run against a lab: k6 started and followed, the live line, the results judged.

Where k6 runs and sends, and the CPU quotas the nodes are held to meanwhile, are
``placement``'s; starting, stopping and removing the k6 process is ``k6_process``'s. This module
composes them with the observers (CPU and memory per container, the pool, NGINX's access log)
into one ``LoadResult``. Everything the run starts is bounded by the schedule's length and is
stopped and removed on the way out (Ctrl-C included).
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

from lab.config import LoadConfig
from lab.errors import LabError
from lab.history import (
    AccessLogEntry,
    ContainerSample,
    DroppedIteration,
    History,
    RequestRecord,
)
from lab.load.k6 import find_k6
from lab.load.k6_process import CONTAINER_DIR, K6_NODE, K6Process
from lab.load.observe import ProcessSampler, StatsSampler
from lab.load.placement import (
    THROUGH_NGINX,
    Placement,
    Target,
    base_url,
    hold_quotas,
    node_quotas,
    restore_quotas,
)
from lab.load.profiles import LoadPlan
from lab.load.results import (
    Collected,
    CsvTail,
    LoadVerdict,
    RecordBuilder,
    ThresholdResult,
    judge_records,
    read_summary,
    verdict_of,
)
from lab.load.script import GRACEFUL_STOP_S, render_script
from lab.load.thresholds import LoadThresholds
from lab.stats import nearest_rank_or_none
from lab.topology.access_log import parse_access_log
from lab.topology.lab import Lab
from lab.workload.pool_load import PoolSampler

SEEDED_USERS = ("user1@lab.test", "user2@lab.test", "user3@lab.test")
STARTUP_ALLOWANCE_S = 60.0  # k6's start, VU initialisation, the summary and exports


@dataclass(frozen=True)
class LoadProgress:
    """One live line: elapsed time, the current rate and p95, errors and drops so far."""

    elapsed_s: float
    rate_per_s: float
    p95_s: float | None
    sent: int
    errors: int
    dropped: int
    scheduled_rate: float | None


@dataclass(frozen=True)
class LoadUser:
    """A seeded user as a load script gets it (``LAB_USERS``)."""

    email: str
    token: str
    conversation_id: int | None


@dataclass(frozen=True)
class LoadResult:
    """One load run: what was asked, what k6 said, what the lab saw."""

    name: str  # the profile, or the user script's file name
    lab: str
    directory: Path
    started_at: float  # k6's start (epoch s)
    finished_at: float
    verdict: LoadVerdict
    k6_exit_code: int
    k6_version: str
    generator: Placement
    target: Target
    plan: LoadPlan | None
    thresholds: LoadThresholds
    threshold_results: tuple[ThresholdResult, ...]
    history: History
    dropped: tuple[DroppedIteration, ...]
    containers: tuple[ContainerSample, ...]
    quotas: dict[str, float | None]  # node -> CPU quota in force during the load
    cores: int
    scenario_start: float | None  # when k6's scenarios started (epoch s)
    k6_metrics: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    script: Path | None = None  # the user's script, when one ran
    # The host's 1-minute load average at the start and the end: on a shared machine a
    # neighbour's load is latency no node's quota explains.
    load_average: tuple[float, float] = (0.0, 0.0)

    @property
    def t0(self) -> float:
        """The schedule's zero: k6's scenario start, else the first send."""
        if self.scenario_start is not None:
            return self.scenario_start
        return min((r.sent_at for r in self.history.requests), default=self.started_at)


def login_users(
    base_url: str,
    password: str,
    emails: tuple[str, ...] = SEEDED_USERS,
) -> tuple[LoadUser, ...]:
    """Tokens (and each user's first conversation) for the seeded users, through NGINX's
    published port; spaced so the api zone's no-burst rule lets each one through."""
    users = []
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for email in emails:
            response = client.post("/api/auth/login", json={"email": email, "password": password})
            if response.status_code != 200:
                raise LabError(
                    f"login of {email} for the load failed: {response.status_code} "
                    f"{response.text[:200]}",
                    hint="is the lab ready? `lab status`",
                )
            token = response.json()["token"]
            time.sleep(0.05)
            listed = client.get("/api/conversations", headers={"Authorization": f"Bearer {token}"})
            conversations = (
                listed.json().get("conversations", []) if listed.status_code == 200 else []
            )
            first = conversations[0]["id"] if conversations else None
            users.append(LoadUser(email, token, first))
            time.sleep(0.05)
    return tuple(users)


def with_backends(
    records: list[RequestRecord],
    log: list[AccessLogEntry],
    target: Target,
) -> list[RequestRecord]:
    """Each answered record with the backend that served it: NGINX's access log entry of
    its request id (the last upstream tried), or the target itself when k6 sent to a backend
    directly (no NGINX in the path)."""
    if target.node != "nginx":
        return [replace(r, backend=target.node) if r.status else r for r in records]
    served = {
        e.request_id: e.upstream_backends[-1] for e in log if e.request_id and e.upstream_backends
    }
    return [
        replace(r, backend=served.get(r.request_id or "")) if r.request_id else r for r in records
    ]


def _stamp(at: float) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(at))


@dataclass(frozen=True)
class _Observed:
    """What one k6 run left: its window, its exit, the history and k6's records."""

    started: float
    finished: float
    exit_code: int | None          # None: it outlasted the deadline and its stop
    notes: list[str]
    history: History
    collected: Collected
    samples: tuple[ContainerSample, ...]
    quotas: dict[str, float | None]
    load_before: float             # the host's 1-minute load average at the start


class LoadRunner:
    """Runs one plan (or a user's script) with k6 against one running lab."""

    def __init__(
        self,
        lab: Lab,
        *,
        plan: LoadPlan | None = None,
        script: Path | None = None,
        thresholds: LoadThresholds | None = None,
        settings: LoadConfig | None = None,
        generator: Placement | None = None,
        target: Target = THROUGH_NGINX,
        report_root: Path = Path(".lab") / "runs",
        dashboard: bool = True,
        keep_points: bool = False,
        timeout_s: float = 3600.0,
        on_progress: Callable[[LoadProgress], None] = lambda progress: None,
        label: str | None = None,
    ):
        if (plan is None) == (script is None):
            raise ValueError("LoadRunner runs either a plan or a script")
        self.lab = lab
        self.plan = plan
        self.script = script
        self.thresholds = plan.thresholds if plan is not None else (thresholds or LoadThresholds())
        self.settings = settings or LoadConfig()
        self.generator: Placement = generator or self.settings.generator
        self.target = target
        self.report_root = report_root
        self.dashboard = dashboard
        self.keep_points = keep_points
        self.timeout_s = timeout_s
        self.on_progress = on_progress
        self.label = label
        self.name = plan.profile if plan is not None else (script.name if script else "script")
        self._process: K6Process | None = None

    def quotas(self) -> dict[str, float | None]:
        """Node -> the CPU quota a load run holds it to (None: none)."""
        return node_quotas(self.lab, self.settings)

    def stop(self) -> None:
        """Ask a running k6 to end now, gracefully: what it recorded is still read and judged."""
        if self._process is not None:
            self._process.interrupt()

    # -- the run --------------------------------------------------------------------------------

    def _env(self, users: tuple[LoadUser, ...], base_url: str, directory: str) -> dict[str, str]:
        env = {
            "LAB_BASE_URL": base_url,
            "LAB_TOKEN": users[0].token if users else "",
            "LAB_USERS": json.dumps([u.__dict__ for u in users]),
            "LAB_PASSWORD": self.lab.secrets.seed_password,
            "K6_NO_USAGE_REPORT": "true",  # k6 never calls home from here
            "K6_CSV_TIME_FORMAT": "unix_micro",
            "K6_CSV_SAVE_INTERVAL": "1s",
        }
        if self.dashboard:
            env.update(
                {
                    "K6_WEB_DASHBOARD": "true",
                    "K6_WEB_DASHBOARD_PORT": "-1",
                    "K6_WEB_DASHBOARD_EXPORT": f"{directory}/dashboard.html",
                }
            )
        return env

    def _directory(self) -> Path:
        label = f"-{self.label}" if self.label else ""
        directory = (
            self.report_root
            / f"{_stamp(time.time())}-load-{self.name}{label}-{uuid.uuid4().hex[:4]}"
        )
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def _script_in(self, directory: Path) -> Path:
        """The script k6 runs: the plan's, written into the run's folder, or the user's."""
        if self.plan is not None:
            script = directory / "script.js"
            script.write_text(render_script(self.plan))
            return script
        assert self.script is not None
        script = self.script.resolve()
        if not script.is_file():
            raise LabError(f"{self.script}: no such k6 script")
        return script

    def _live(self, builder: RecordBuilder, started: float) -> LoadProgress:
        records = builder.collected.records
        now = max((r.sent_at for r in records[-2000:]), default=time.time())
        recent = [r for r in records[-20000:] if r.sent_at >= now - 2.0]
        latencies = [r.latency_s if r.latency_s is not None else math.inf for r in recent]
        errors = builder.collected.errors
        t0 = builder.collected.started_at
        scheduled = (
            self.plan.rate_at(now - t0) if self.plan is not None and t0 is not None else None
        )
        return LoadProgress(
            time.time() - started,
            len(recent) / 2.0,
            nearest_rank_or_none(latencies, 0.95),
            len(records),
            errors,
            len(builder.collected.dropped),
            scheduled,
        )

    def _deadline_s(self) -> float:
        if self.plan is not None:
            return self.plan.duration_s + GRACEFUL_STOP_S + STARTUP_ALLOWANCE_S
        return self.timeout_s

    def _samplers(self) -> tuple[StatsSampler, PoolSampler]:
        """CPU and memory per container, and the pool's figures, for as long as k6 may run."""
        lab = self.lab
        stats = StatsSampler(
            lab.engine.stats_stream,
            {lab.container(node): node for node in lab.roles},
            max_duration_s=self._deadline_s() + 30,
        )
        pool = PoolSampler(
            lab.endpoints.pgbouncer_admin_dsn,
            lab.endpoints.postgres_dsn,
            lab.config.postgres.user,
            lab.config.postgres.database,
            interval_s=1.0,
            max_duration_s=self._deadline_s() + 30,
        )
        return stats, pool

    def _start(self, process: K6Process, env: dict[str, str], directory: Path, script: Path,
               stats: StatsSampler) -> ProcessSampler | None:
        """Start k6 and what watches its own CPU: a sampler of the host process, or the
        container's stats beside the nodes'."""
        process.start(env, directory, script)
        if self.generator == "host":
            assert process.pid is not None
            return ProcessSampler(process.pid, max_duration_s=self._deadline_s()).start()
        assert process.container is not None
        stats.add(process.container, K6_NODE)
        return None

    def _follow(self, process: K6Process, builder: RecordBuilder, tail: CsvTail,
                started: float, notes: list[str]) -> int | None:
        """Read k6's points into the live line until it exits; at the deadline, stop it."""
        deadline = time.monotonic() + self._deadline_s()
        while (exit_code := process.exited()) is None:
            if time.monotonic() > deadline:
                notes.append(f"k6 outlasted its deadline ({self._deadline_s():.0f} s): stopped")
                process.interrupt()
                return process.wait_exit(GRACEFUL_STOP_S + 10)
            builder.feed(tail.read())
            self.on_progress(self._live(builder, started))
            time.sleep(0.5)
        return exit_code

    def _record(self, history: History, pool: PoolSampler, builder: RecordBuilder,
                started: float, notes: list[str]) -> None:
        """The run's history: the pool's figures, NGINX's access log, each request with the
        backend that served it."""
        try:
            history.pool_stats.append(pool.stats())
        except Exception as exc:  # noqa: BLE001 - the figures that need it are left out
            notes.append(f"SHOW STATS after the load failed: {type(exc).__name__}: {exc}")
        history.pool_samples.extend(pool.samples)
        history.access_log.extend(self._access_log(started))
        history.requests.extend(
            with_backends(builder.collected.records, history.access_log, self.target)
        )

    def _thresholds(self, directory: Path, collected: Collected
                    ) -> tuple[dict, tuple[ThresholdResult, ...]]:
        """k6's summary metrics and threshold results (for a user's script, the objectives in
        force judged over its requests as well)."""
        metrics, thresholds = read_summary(directory / "summary.json")
        if self.script is not None:
            # A user's script sets its own thresholds, or none: the objectives in force judge
            # its requests all the same.
            thresholds = (*thresholds, *judge_records(collected.records,
                                                      self.thresholds.p95_s,
                                                      self.thresholds.error_rate))
        return metrics, thresholds

    def _observed(self, process: K6Process, env: dict[str, str], directory: Path,
                  script: Path) -> _Observed:
        """k6 run to its end under the nodes' CPU quotas, watched (the containers' CPU and
        memory, the pool, k6's points as they come); the quotas restored and k6 removed
        whatever happens."""
        lab = self.lab
        quotas = self.quotas()
        notes: list[str] = []
        builder = RecordBuilder(self.plan)
        tail = CsvTail(directory / "points.csv")
        stats, pool = self._samplers()
        history = History()
        before = hold_quotas(lab, quotas)
        sampler: ProcessSampler | None = None
        exit_code: int | None = None
        started = time.time()
        load_before = os.getloadavg()[0]
        try:
            stats.start()
            pool.start()
            history.pool_stats.append(pool.stats())
            started = time.time()
            history.mark("start", started)
            sampler = self._start(process, env, directory, script, stats)
            exit_code = self._follow(process, builder, tail, started, notes)
        except BaseException:
            process.interrupt()
            process.wait_exit(GRACEFUL_STOP_S + 10)
            raise
        finally:
            finished = time.time()
            history.mark("end", finished)
            if sampler is not None:
                sampler.stop()
            stats.stop()
            pool.stop()
            process.save_log(directory)
            process.remove()
            notes.extend(restore_quotas(lab, before))
        builder.feed(tail.read())
        self._record(history, pool, builder, started, notes)
        samples = (*stats.samples, *(sampler.samples if sampler else ()))
        return _Observed(started, finished, exit_code, notes, history, builder.collected,
                         samples, quotas, load_before)

    def run(self) -> LoadResult:
        """Run k6 to its end (or the deadline), then read and judge what it recorded."""
        lab = self.lab
        k6 = find_k6(static=self.generator == "network")
        url = base_url(lab, self.generator, self.target)
        directory = self._directory()
        script = self._script_in(directory)
        users = login_users(lab.endpoints.nginx_http, lab.secrets.seed_password)
        inside = CONTAINER_DIR if self.generator == "network" else str(directory.resolve())
        env = self._env(users, url, inside)
        process = self._process = K6Process(lab, k6, self.generator,
                                            addresses=self.settings.client_addresses,
                                            user_script=self.script is not None)
        run = self._observed(process, env, directory, script)
        collected = run.collected
        metrics, thresholds = self._thresholds(directory, collected)
        exit_code = run.exit_code if run.exit_code is not None else 125
        if exit_code not in (0, 99) and not run.history.requests:
            log = (
                (directory / "k6.log").read_text(errors="replace")
                if (directory / "k6.log").exists()
                else ""
            )
            raise LabError(
                f"k6 failed (exit {exit_code}) before it sent a request",
                details="\n".join(log.strip().splitlines()[-15:]),
                hint=f"the whole output is in {directory / 'k6.log'}",
            )
        scheduled = self.plan.scheduled() if self.plan is not None else None
        verdict = verdict_of(
            exit_code,
            thresholds,
            len(collected.dropped),
            scheduled,
            len(collected.records),
            self.thresholds.max_dropped,
        )
        if not self.keep_points:
            (directory / "points.csv").unlink(missing_ok=True)
        return LoadResult(
            name=self.name,
            lab=lab.name,
            directory=directory,
            started_at=run.started,
            finished_at=run.finished,
            verdict=verdict,
            k6_exit_code=exit_code,
            k6_version=k6.version_text,
            generator=self.generator,
            target=self.target,
            plan=self.plan,
            thresholds=self.thresholds,
            threshold_results=thresholds,
            history=run.history,
            dropped=tuple(DroppedIteration(at, client) for at, client in collected.dropped),
            containers=run.samples,
            quotas=run.quotas,
            cores=os.cpu_count() or 1,
            scenario_start=collected.started_at,
            k6_metrics=metrics,
            notes=tuple(run.notes),
            script=self.script,
            load_average=(run.load_before, os.getloadavg()[0]),
        )

    def _access_log(self, since: float) -> list[AccessLogEntry]:
        addresses = {
            f"{ip}:{self.lab.backend_port}": node for ip, node in self.lab.addresses().items()
        }
        text = self.lab.logs("nginx", tail="all", since=since - 1)
        return [e for e in parse_access_log(text, addresses) if e.msec >= since]
