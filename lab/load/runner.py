"""Running k6 against a lab: placement, CPU quotas, observers, the live line, the results.

Placement (``generator``):

- ``network`` (default): k6 runs in a container on the lab's network (the sidecar image with
  the k6 binary mounted read-only) and each VU sends from its own client address (k6
  ``--local-ips`` over addresses added to the container's interface), like the checklist's
  many users. NGINX keys ``limit_req`` on ``$binary_remote_addr``: from one address the api
  zone (100 r/s, no burst) rejects any request that arrives within 10 ms of the one before,
  so one address cannot load ``/api/`` at all (README, findings).
- ``host``: k6 on the host, through the published 127.0.0.1 port. Docker's userland proxy
  carries every request (its CPU is outside every quota) and NGINX sees one address, the
  network's gateway.

During the run every node is held to its role's CPU quota (``[load] cpus``), restored
afterwards whatever happens; a SIGKILLed run leaves them until the next ``lab load`` ends or
the lab is removed. Everything the run starts is bounded by the schedule's length and is
stopped and removed on the way out (Ctrl-C included).
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import httpx

from lab.config import LoadConfig
from lab.engine import LABEL_KIND, LABEL_LAB, LABEL_NODE, ContainerSpec, CpuLimit
from lab.errors import LabError
from lab.history import (
    AccessLogEntry,
    ContainerSample,
    DroppedIteration,
    History,
    RequestRecord,
)
from lab.load.k6 import K6Binary, find_k6
from lab.load.observe import ProcessSampler, StatsSampler
from lab.load.profiles import LoadPlan
from lab.load.results import (
    CsvTail,
    LoadVerdict,
    RecordBuilder,
    ThresholdResult,
    judge_records,
    percentile,
    read_summary,
    verdict_of,
)
from lab.load.script import GRACEFUL_STOP_S, render_script
from lab.load.thresholds import LoadThresholds
from lab.topology.lab import LABEL_OWNER, Lab, owner_id
from lab.topology.plan import network_name
from lab.topology.render import BACKEND_PORT
from lab.workload.access_log import parse_access_log
from lab.workload.pool_load import PoolSampler

Placement = Literal["network", "host"]
SEEDED_USERS = ("user1@lab.test", "user2@lab.test", "user3@lab.test")
FIRST_CLIENT_ADDRESS = 128  # of the lab's /24; nodes sit below 32, Docker's IPAM from 2
STARTUP_ALLOWANCE_S = 60.0  # k6's start, VU initialisation, the summary and exports
K6_NODE = "k6"
# Every container has CFS weight 1024 and they share one cgroup: on a contended machine k6 in a
# container got less CPU than on the host (1,505 against 1,817 answers/s in one bench round).
# The nodes are held by their quotas; the generator may take what is left, first.
GENERATOR_CPU_SHARES = 8192
CONTAINER_DIR = "/lab"
SCRIPT_DIR = "/script"


@dataclass(frozen=True)
class Target:
    """Where the generator's requests go: a node and its container port."""

    node: str = "nginx"
    port: int = 80


BACKEND_DIRECT = Target("backend-1", BACKEND_PORT)


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


def hold_quotas(lab: Lab, quotas: dict[str, float | None]) -> dict[str, CpuLimit]:
    """Hold each node to its CPU quota; returns what each had before, for ``restore_quotas``."""
    engine, before = lab.engine, {}
    try:
        for node, cpus in quotas.items():
            if cpus is None:
                continue
            container = lab.container(node)
            before[container] = engine.cpu_limit(container)
            engine.set_cpu_limit(container, cpus)
    except BaseException:
        restore_quotas(lab, before)
        raise
    return before


def restore_quotas(lab: Lab, before: dict[str, CpuLimit]) -> list[str]:
    """Put back the quotas ``hold_quotas`` replaced; the problems, one sentence each."""
    problems = []
    for container, limit in before.items():
        try:
            lab.engine.restore_cpu_limit(container, limit)
        except LabError as exc:
            problems.append(f"restoring the CPU quota of {container} failed: {exc}")
    return problems


def _stamp(at: float) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(at))


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
        target: Target = Target(),
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
        self._proc: subprocess.Popen[bytes] | None = None
        self._container: str | None = None

    # -- quotas ---------------------------------------------------------------------------------

    def quotas(self) -> dict[str, float | None]:
        """Node -> the CPU quota a load run holds it to (None: none)."""
        if not self.settings.quotas:
            return {node: None for node in self.lab.roles}
        return {node: self.settings.cpus.get(role) for node, role in self.lab.roles.items()}

    # -- placement ------------------------------------------------------------------------------

    def _client_addresses(self) -> tuple[str, str]:
        """The first and last client address on the lab's /24 (network placement)."""
        info = self.lab.inspect("nginx")
        if info is None or info.ip_address is None:
            raise LabError(f"lab {self.lab.name}: NGINX has no address on the lab network")
        subnet = ipaddress.ip_network(f"{info.ip_address}/24", strict=False)
        count = self.settings.client_addresses
        return str(subnet[FIRST_CLIENT_ADDRESS]), str(subnet[FIRST_CLIENT_ADDRESS + count - 1])

    def _base_url(self) -> str:
        if self.generator == "network":
            port = "" if self.target.port == 80 else f":{self.target.port}"
            return f"http://{self.target.node}{port}"
        info = self.lab.inspect(self.target.node)
        key = f"{self.target.port}/tcp"
        if info is None or key not in info.published:
            raise LabError(
                f"{self.target.node} publishes no port {key}: k6 on the host cannot reach it",
                hint="run the generator on the lab network (--from network)",
            )
        return f"http://127.0.0.1:{info.published[key][1]}"

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

    def _k6_args(self, directory: str, script: str) -> list[str]:
        args = [
            "run",
            "--quiet",
            "--no-color",
            "--out",
            f"csv={directory}/points.csv",
            "--summary-export",
            f"{directory}/summary.json",
        ]
        if self.generator == "network":
            first, last = self._client_addresses()
            args += ["--local-ips", f"{first}-{last}"]
        return [*args, script]

    def _start_host(self, k6: K6Binary, env: dict[str, str], directory: Path, script: Path) -> None:
        # Absolute paths: k6 runs in the script's folder, and it reads a relative name that does
        # not start with "./" (".lab/runs/...") as a module specifier, not a file.
        directory, script = directory.resolve(), script.resolve()
        log = (directory / "k6.log").open("wb")
        self._proc = subprocess.Popen(
            [str(k6.path), *self._k6_args(str(directory), str(script))],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=script.parent,
        )
        log.close()

    def _start_container(
        self, k6: K6Binary, env: dict[str, str], directory: Path, script: Path
    ) -> None:
        first, last = self._client_addresses()
        start, end = ipaddress.ip_address(first), ipaddress.ip_address(last)
        binds = {
            str(k6.path): ("/usr/local/bin/k6", True),
            str(directory.resolve()): (CONTAINER_DIR, False),
        }
        if self.script is not None:
            binds[str(script.parent.resolve())] = (SCRIPT_DIR, True)
            inside = f"{SCRIPT_DIR}/{script.name}"
        else:
            inside = f"{CONTAINER_DIR}/{script.name}"
        # Every VU gets one of these addresses (k6 --local-ips); they are on this container's
        # interface only, inside the lab's own /24, above the nodes and Docker's allocations.
        add = " && ".join(
            f"ip addr add {ipaddress.ip_address(a)}/32 dev eth0"
            for a in range(int(start), int(end) + 1)
        )
        command = " ".join(["k6", *(f"'{a}'" for a in self._k6_args(CONTAINER_DIR, inside))])
        name = f"lab-{self.lab.name}-k6-{uuid.uuid4().hex[:6]}"
        spec = ContainerSpec(
            name=name,
            image=self.lab.sidecar_image(),
            labels={
                LABEL_LAB: self.lab.name,
                LABEL_KIND: "sidecar",
                LABEL_NODE: K6_NODE,
                LABEL_OWNER: owner_id(),
            },
            network=network_name(self.lab.name),
            env=env,
            cap_add=("NET_ADMIN",),
            command=("sh", "-c", f"{add} && cd {inside.rsplit('/', 1)[0]} && exec {command}"),
            binds=binds,
            stop_timeout_s=GRACEFUL_STOP_S + 5,
            cpu_shares=GENERATOR_CPU_SHARES,
        )
        self.lab.engine.create_container(spec)
        self._container = name
        self.lab.engine.start(name)

    def stop(self) -> None:
        """Ask a running k6 to end now, gracefully: what it recorded is still read and judged."""
        self._interrupt()

    def _exited(self) -> int | None:
        if self._proc is not None:
            return self._proc.poll()
        info = self.lab.engine.inspect(self._container or "")
        if info is None:
            return 125
        return info.exit_code if info.status in ("exited", "dead") else None

    def _interrupt(self) -> None:
        """Ask k6 to stop as after Ctrl-C: it ends the iterations and writes its summary."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
        elif self._container is not None:
            try:
                self.lab.engine.kill(self._container, "SIGINT")
            except LabError:
                pass

    def _wait_exit(self, timeout_s: float) -> int | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self._exited()
            if code is not None:
                return code
            time.sleep(0.2)
        return None

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        if self._container is not None:
            self.lab.engine.remove_container(self._container)

    # -- the run --------------------------------------------------------------------------------

    def _directory(self) -> Path:
        label = f"-{self.label}" if self.label else ""
        directory = (
            self.report_root
            / f"{_stamp(time.time())}-load-{self.name}{label}-{uuid.uuid4().hex[:4]}"
        )
        directory.mkdir(parents=True, exist_ok=True)
        return directory

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
            percentile(latencies, 95),
            len(records),
            errors,
            len(builder.collected.dropped),
            scheduled,
        )

    def _deadline_s(self) -> float:
        if self.plan is not None:
            return self.plan.duration_s + GRACEFUL_STOP_S + STARTUP_ALLOWANCE_S
        return self.timeout_s

    def run(self) -> LoadResult:
        """Run k6 to its end (or the deadline), then read and judge what it recorded."""
        lab = self.lab
        k6 = find_k6(static=self.generator == "network")
        base_url = self._base_url()
        directory = self._directory()
        if self.plan is not None:
            script = directory / "script.js"
            script.write_text(render_script(self.plan))
        else:
            assert self.script is not None
            script = self.script.resolve()
            if not script.is_file():
                raise LabError(f"{self.script}: no such k6 script")
        users = login_users(lab.endpoints.nginx_http, lab.secrets.seed_password)
        quotas = self.quotas()
        inside = CONTAINER_DIR if self.generator == "network" else str(directory.resolve())
        env = self._env(users, base_url, inside)
        notes: list[str] = []
        builder = RecordBuilder(self.plan)
        tail = CsvTail(directory / "points.csv")
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
        history = History()
        before = hold_quotas(lab, quotas)
        process: ProcessSampler | None = None
        exit_code: int | None = None
        started = time.time()
        load_before = os.getloadavg()[0]
        try:
            stats.start()
            pool.start()
            history.pool_stats.append(pool.stats())
            started = time.time()
            history.mark("start", started)
            if self.generator == "host":
                self._start_host(k6, env, directory, script)
                assert self._proc is not None
                process = ProcessSampler(self._proc.pid, max_duration_s=self._deadline_s()).start()
            else:
                self._start_container(k6, env, directory, script)
                assert self._container is not None
                stats.add(self._container, K6_NODE)
            deadline = time.monotonic() + self._deadline_s()
            while (exit_code := self._exited()) is None:
                if time.monotonic() > deadline:
                    notes.append(f"k6 outlasted its deadline ({self._deadline_s():.0f} s): stopped")
                    self._interrupt()
                    exit_code = self._wait_exit(GRACEFUL_STOP_S + 10)
                    break
                builder.feed(tail.read())
                self.on_progress(self._live(builder, started))
                time.sleep(0.5)
        except BaseException:
            self._interrupt()
            self._wait_exit(GRACEFUL_STOP_S + 10)
            raise
        finally:
            finished = time.time()
            history.mark("end", finished)
            if process is not None:
                process.stop()
            stats.stop()
            pool.stop()
            if self._container is not None:
                (directory / "k6.log").write_text(lab.engine.logs(self._container))
            self._kill()
            notes.extend(restore_quotas(lab, before))
        builder.feed(tail.read())
        try:
            history.pool_stats.append(pool.stats())
        except Exception as exc:  # noqa: BLE001 - the figures that need it are left out
            notes.append(f"SHOW STATS after the load failed: {type(exc).__name__}: {exc}")
        history.pool_samples.extend(pool.samples)
        history.access_log.extend(self._access_log(started))
        history.requests.extend(
            with_backends(builder.collected.records, history.access_log, self.target)
        )
        metrics, thresholds = read_summary(directory / "summary.json")
        if self.script is not None:
            # A user's script sets its own thresholds, or none: the objectives in force judge
            # its requests all the same.
            thresholds = (*thresholds, *judge_records(builder.collected.records,
                                                      self.thresholds.p95_s,
                                                      self.thresholds.error_rate))
        if exit_code is None:
            exit_code = 125
        if exit_code not in (0, 99) and not history.requests:
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
        collected = builder.collected
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
        samples = [*stats.samples, *(process.samples if process else [])]
        return LoadResult(
            name=self.name,
            lab=lab.name,
            directory=directory,
            started_at=started,
            finished_at=finished,
            verdict=verdict,
            k6_exit_code=exit_code,
            k6_version=k6.version_text,
            generator=self.generator,
            target=self.target,
            plan=self.plan,
            thresholds=self.thresholds,
            threshold_results=thresholds,
            history=history,
            dropped=tuple(DroppedIteration(at, client) for at, client in collected.dropped),
            containers=tuple(samples),
            quotas=quotas,
            cores=os.cpu_count() or 1,
            scenario_start=collected.started_at,
            k6_metrics=metrics,
            notes=tuple(notes),
            script=self.script,
            load_average=(load_before, os.getloadavg()[0]),
        )

    def _access_log(self, since: float) -> list[AccessLogEntry]:
        addresses = {
            f"{ip}:{self.lab.backend_port}": node for ip, node in self.lab.addresses().items()
        }
        text = self.lab.logs("nginx", tail="all", since=since - 1)
        return [e for e in parse_access_log(text, addresses) if e.msec >= since]
