"""The state of one scenario run, which steps and probes act on: the lab, the history being
recorded, the faults in place, the traffic, and the progress line.

Faults are injected and healed here, so that the steps, the runner's ``finally`` and a
manual ``lab heal`` share one way of doing it: every inject and heal is a ``FaultEvent`` in
the history, carrying the fault's ``Effect`` from its definition (so the checks, which never
import the fault registry, read what the fault did), and a lifecycle fault's heal waits until
its node is ready again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from redis import RedisError

from lab.errors import LabError
from lab.expectations import Expectations
from lab.faults import FAULTS, Fault, FaultSpec, Forgetting, make_fault
from lab.faults import record as fault_record
from lab.history import FaultEvent, FaultPhase, History, ready_mark
from lab.topology.lab import Lab
from lab.waits import wait_until
from lab.workload import TrafficRun
from lab.workload.health_watch import HealthWatcher
from lab.workload.job_sources import lock_reader
from lab.workload.jobs import redis_client


class NoLockTaken(LabError):
    """No backend took a job's lock in time: a finding about the system, not a failure of the
    lab. The runner stops the steps there and judges what was recorded (the lock checks fail
    on the ticks nobody ran)."""


@dataclass(frozen=True)
class Progress:
    """One live progress line: where the run is and what the traffic saw so far."""

    phase: str
    elapsed_s: float
    sent: int
    ok: int
    failed: int
    unknown: int


DYNAMIC = ("random", "holder:")


def is_dynamic(target: str) -> bool:
    """A target resolved when its step runs: a seeded random pick or a lock's holder."""
    return target.startswith(DYNAMIC)


@dataclass
class RunState:
    """Everything a run's steps read and change."""

    lab: Lab
    expectations: Expectations
    names: dict[str, float]
    seed: int
    on_progress: Callable[[Progress], None] = lambda progress: None
    ready_timeout_s: float = 60.0
    history: History = field(default_factory=History)
    active: dict[tuple[str, str], Fault] = field(default_factory=dict)
    faults: list[FaultSpec] = field(default_factory=list)
    added_latency_s: float = 0.0      # the largest round trip a latency fault injected
    notes: list[str] = field(default_factory=list)
    phase: str = "starting"
    watchers: list[HealthWatcher] = field(default_factory=list)
    traffic: TrafficRun | None = None
    targets: dict[str, str] = field(default_factory=dict)   # dynamic target -> node
    started: float = field(default_factory=time.monotonic)
    # Who injects, in the lab's fault record (`lab faults`); the record of each active fault.
    origin: fault_record.Origin = field(
        default_factory=lambda: fault_record.Origin(kind="scenario", name="a scenario run"))
    records: dict[tuple[str, str], fault_record.FaultRecord] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    # -- progress ------------------------------------------------------------------------------

    def tick(self, phase: str | None = None) -> None:
        """Report progress (and set the phase first, when given)."""
        if phase is not None:
            self.phase = phase
        sent = ok = failed = unknown = 0
        if self.traffic is not None:
            sent, ok, failed, unknown = self.traffic.counts
        self.on_progress(Progress(self.phase, time.monotonic() - self.started, sent, ok, failed,
                                  unknown))

    def sleep(self, seconds: float) -> None:
        """Wait, reporting progress every 0.2 s."""
        deadline = time.monotonic() + max(0.0, seconds)
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(0.2, left))
            self.tick()

    # -- targets -------------------------------------------------------------------------------

    def poll_locks(self, timeout_s: float,
                   done: Callable[[dict[str, tuple[str, int | None]]], str | None],
                   what: str) -> str:
        """Read the job locks from Redis every 50 ms until ``done(locks)`` names a backend;
        ``locks`` maps each held job to its holder and fencing token."""
        reader = lock_reader(self.lab.config.backend.contract)
        if reader is None:
            raise LabError(f"{what}: the backend contract names no lock keys to read",
                           hint="add [backend.contract.locks] key and holder to lab.toml")
        jobs = self.expectations.backend.jobs
        with redis_client(self.lab.endpoints.redis_url) as client:

            def holder() -> str | None:
                return done({job: lock for job, lock in reader(client, jobs).items()
                             if lock[0] in self.lab.roles})

            # A Redis that does not answer for a moment (a fault on it) is "not yet".
            return wait_until(holder, timeout_s, 0.05, what, error=NoLockTaken,
                              ignore=(RedisError,),
                              hint="is locking on, and does the job run (LAB_JOB_INTERVAL_S)?")

    def resolve(self, target: str) -> str:
        """A node name, a seeded random pick (``random``, ``random:<role>``) or the current
        holder of a job's lock (``holder:<job>``); dynamic targets are remembered, so a heal
        and the checks refer to the node the inject hit."""
        if target.startswith("holder:"):
            job = target.split(":", 1)[1]
            node = self.poll_locks(3 * self.expectations.backend.job_interval_s + 5,
                                   lambda locks: locks[job][0] if job in locks else None,
                                   f"no backend held the lock of job {job!r}")
        elif target == "random":
            node = self.rng.choice(sorted(n for n, r in self.lab.roles.items() if r != "nginx"))
        elif target.startswith("random:"):
            role = target.split(":", 1)[1]
            node = self.rng.choice(sorted(n for n, r in self.lab.roles.items() if r == role))
        else:
            self.lab.container(target)  # UnknownNode for a typo
            return target
        self.targets.setdefault(target, node)
        return node

    # -- faults --------------------------------------------------------------------------------

    def inject(self, spec: FaultSpec, *, until: float | None = None) -> None:
        """Put one fault in place and record it (in the history and in the lab's record)."""
        fault = make_fault(spec, self.lab)
        self.tick(f"inject {spec.kind} {spec.target}")
        started = time.time()
        detail = fault.inject()
        lost = fault.lost_keys() if isinstance(fault, Forgetting) else ()
        self.history.faults.append(FaultEvent(spec.kind, spec.target, FaultPhase.INJECT,
                                              time.time(), started, detail,
                                              FAULTS.get(spec.kind).effect, lost))
        self.active[(spec.kind, spec.target)] = fault
        self.records[(spec.kind, spec.target)] = fault_record.write(
            self.lab, spec, fault, detail, self.origin, until=until)
        self.faults.append(spec)
        self.added_latency_s = max(self.added_latency_s, getattr(fault, "round_trip_s", 0.0))

    def heal(self, kind: str, target: str) -> None:
        """Undo one active fault; a lifecycle fault's node is then waited for until ready."""
        fault = self.active.pop((kind, target), None)
        if fault is None:
            active = ", ".join(f"{k} on {t}" for k, t in self.active) or "none"
            raise LabError(f"heal of {kind} on {target}: no such fault is active "
                           f"(active: {active})")
        self.tick(f"heal {kind} {target}")
        started = time.time()
        detail = fault.heal()
        definition = FAULTS.get(kind)
        self.history.faults.append(FaultEvent(kind, target, FaultPhase.HEAL, time.time(), started,
                                              detail, definition.effect))
        fault_record.forget(self.lab, self.records.pop((kind, target), None))
        if definition.lifecycle:
            self.lab.wait_ready(target, self.ready_timeout_s)
            self.history.mark(ready_mark(target), time.time())

    def heal_all(self) -> None:
        """Heal every active fault in the order injected; one failure does not stop the rest."""
        for kind, target in list(self.active):
            try:
                self.heal(kind, target)
            except Exception as exc:  # noqa: BLE001 - keep healing the others
                self.notes.append(f"heal of {kind} on {target} failed: {exc}")

    # -- clients -------------------------------------------------------------------------------

    def login(self) -> str:
        """A bearer token for the seeded user, through NGINX's published port."""
        with self.lab.client_target("/api/auth/login").httpx_client(timeout=5) as client:
            response = client.post("/api/auth/login",
                                   json={"email": "user1@lab.test",
                                         "password": self.lab.secrets.seed_password})
        if response.status_code != 200:
            raise LabError(f"login for the write stream failed: {response.status_code} "
                           f"{response.text[:200]}")
        return response.json()["token"]
