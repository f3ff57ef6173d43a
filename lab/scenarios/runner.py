"""Running a scenario: expectations, predictions, steady state, traffic and timed steps, heal,
steady state, observations, judgement.

The expectations record is built once, before any traffic, from what the lab really runs (or
from a claimed configuration, for negative controls); the predictions for every objective are
stated from it before the first request. Steps run through their registry
(``lab.scenarios.steps``). Healing runs in every case (a failed step, an exception, Ctrl-C,
SIGTERM): every fault still in place is healed in ``finally``, and a run killed with SIGKILL
is repaired by the next run's ``heal_leftovers``. Judging (``lab.scenarios.judge``) reads the
recorded history only; it never touches Docker.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import psycopg

from lab import __version__
from lab.checks import CHECKS, CheckResult, Observation
from lab.expectations import Expectations, UpstreamPolicy, duration_names
from lab.faults import FaultSpec, heal_leftovers
from lab.faults import record as fault_record
from lab.history import AccessLogEntry, FaultPhase, History, JobRun, RequestRecord
from lab.objectives import ObjectivesInForce, defaults
from lab.scenarios.judge import (
    RunFacts,
    failure_modes,
    held,
    injections,
    judge,
    planned_failure_modes,
    planned_injections,
    predictions,
)
from lab.scenarios.model import Scenario
from lab.scenarios.state import NoLockTaken, Progress, RunState
from lab.scenarios.steps import definition_of, end_watches
from lab.topology.expect import running
from lab.topology.lab import Lab
from lab.verdict import Prediction, Verdict, combine
from lab.waits import poll
from lab.workload import TrafficRun, TrafficSpec, parse_access_log
from lab.workload.job_sources import job_source

__all__ = ["Progress", "RunResult", "Runner", "rejudge"]

WRITE_MARKER = "lab-write"
# How long the run waits for NGINX's log to hold every client request (Docker copies a
# container's output asynchronously); a request NGINX never saw waits this long, once a run.
LOG_SETTLE_S = 2.0


class Alongside(Protocol):
    """Traffic that runs beside the steps (a k6 load): started before them, stopped after,
    its requests judged with the scenario's own."""

    @property
    def rate_per_s(self) -> float: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def collect(self) -> tuple[list[RequestRecord], list[str]]: ...


@dataclass(frozen=True)
class RunResult:
    """Everything a run produced: verdicts, each check with its objectives, the predictions,
    and the full history."""

    scenario: str
    description: str
    lab: str
    seed: int
    started_at: float
    finished_at: float
    verdict: Verdict                          # conformance and objectives combined
    checks: tuple[CheckResult, ...]
    history: History
    faults: tuple[FaultSpec, ...]
    notes: tuple[str, ...] = ()
    durations: tuple[tuple[str, float], ...] = ()   # the duration names and their values
    predictions: tuple[Prediction, ...] = ()
    objectives: ObjectivesInForce = field(default_factory=defaults)
    expectations: tuple[tuple[str, str], ...] = ()  # part -> where it was read
    steps: tuple[str, ...] = ()                     # each step as a sentence
    facts: RunFacts | None = None
    config: dict = field(default_factory=dict)      # the lab's configuration (lab.toml)
    version: str = __version__

    @property
    def conformance(self) -> Verdict:
        return combine(c.verdict for c in self.checks)

    @property
    def objectives_verdict(self) -> Verdict:
        return combine(o.verdict for c in self.checks for o in c.objectives)


def stream_facts(scenario: Scenario, alongside: Alongside | None = None) -> dict[str, object]:
    """The run facts the traffic streams give (RunFacts' rate, stream and client fields)."""
    # A load beside the steps reaches NGINX too: its rate is part of every round-robin turn.
    extra = alongside.rate_per_s if alongside is not None else 0.0
    rates = tuple((s.client, s.rate) for s in scenario.traffic)
    if extra:
        rates += (("load", extra),)
    return {"rate_per_s": sum(s.rate for s in scenario.traffic) + extra or 1.0,
            "stream_rates": rates,
            "stream_paths": tuple((s.client, (s.method, s.path)) for s in scenario.traffic),
            "client_timeout_s": min((s.timeout_s for s in scenario.traffic), default=10.0)}


class Runner:
    """Runs one scenario against one running lab."""

    def __init__(self, lab: Lab, scenario: Scenario, *, seed: int | None = None,
                 on_progress: Callable[[Progress], None] = lambda progress: None,
                 on_predictions: Callable[[tuple[Prediction, ...]], None] = (
                     lambda predictions: None),
                 before_step: Callable[[int, str], None] = lambda index, sentence: None,
                 step_wait_s: float = 0.0,
                 ready_timeout_s: float = 60.0, claimed: Expectations | None = None,
                 objectives: ObjectivesInForce | None = None,
                 objective_overrides: dict | None = None,
                 alongside: Alongside | None = None):
        self.lab = lab
        self.scenario = scenario
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        self.on_progress = on_progress
        self.on_predictions = on_predictions
        # Called with each step's number and sentence before it runs; traffic keeps flowing
        # while it blocks (a step-through run waits for Enter here).
        self.before_step = before_step
        # The longest before_step may block in all (a person at a prompt): the samplers and
        # streams that run along the steps are bounded by the plan plus this.
        self.step_wait_s = step_wait_s
        self.ready_timeout_s = ready_timeout_s
        # Normally the checks expect what the lab runs. A claimed configuration (the
        # checklist's) can be given instead: negative controls run a broken topology and
        # judge it against what it should have been.
        self.claimed = claimed
        self.alongside = alongside
        # lab.toml's objectives (or the checklist's), then the scenario's, then --objective.
        self.objectives = (objectives or defaults()).with_overrides(
            scenario.objectives, f"scenario {scenario.name}").with_overrides(
            objective_overrides, "--objective")

    # -- before the traffic ---------------------------------------------------------------------

    def _planned_s(self, names: dict[str, float]) -> float:
        return sum(definition_of(step).planned_s(step, names, self.ready_timeout_s)
                   for step in self.scenario.steps)

    def _traffic_specs(self, state: RunState, planned_s: float) -> list[TrafficSpec]:
        specs = []
        for stream in self.scenario.traffic:
            headers: tuple[tuple[str, str], ...] = ()
            body = None
            if stream.writes or stream.auth:
                headers = (("Authorization", f"Bearer {state.login()}"),
                           ("Content-Type", "application/json"))
            if stream.writes:
                body = ('{"conversation_id": 1, "body": "' + WRITE_MARKER
                        + ' {request_id}"}').encode()
            specs.append(TrafficSpec(rate_per_s=stream.rate,
                                     duration_s=stream.duration_s or planned_s,
                                     method=stream.method, path=stream.path,
                                     timeout_s=stream.timeout_s,
                                     client=stream.client, headers=headers, body=body,
                                     jitter=stream.arrivals == "jittered"))
        return specs

    def _quiesce(self, state: RunState, policy: UpstreamPolicy, addresses: dict[str, str]) -> None:
        """Wait until NGINX has forgotten earlier failures, so this run starts from zero.

        A failure counts against a backend until fail_timeout has passed *and* a request to
        it succeeded (a success within fail_timeout does not reset the count), so a run right
        after another (or after a hand-made fault) would see a backend ejected early. The
        readiness probe through NGINX that follows supplies the resetting successes."""
        failing = {"502", "504", *(c.removeprefix("http_") for c in policy.next_upstream
                                   if c.startswith("http_"))}
        since = time.time() - policy.fail_timeout_s - 2
        entries = parse_access_log(self.lab.logs("nginx", tail="all", since=since), addresses)
        last = max((e.msec for e in entries if failing & set(e.upstream_statuses)), default=None)
        if last is not None:
            # NGINX keeps failure times in whole seconds: one more second covers the rounding.
            wait = last + policy.fail_timeout_s + 1 - time.time()
            if wait > 0:
                state.phase = "waiting for NGINX to forget earlier failures"
                state.notes.append(f"waited {wait:.1f} s for failures from before the run "
                                   "to leave NGINX's fail_timeout window")
                state.sleep(wait)

    # -- after the steps ------------------------------------------------------------------------

    def _needs(self) -> set[Observation]:
        return {need for spec in self.scenario.checks for need in CHECKS.get(spec.check).needs}

    def _stored_writes(self) -> frozenset[str]:
        """Request ids of the write-stream messages present in PostgreSQL (read directly)."""
        with psycopg.connect(self.lab.endpoints.postgres_dsn, autocommit=True,
                             connect_timeout=5) as conn:
            rows = conn.execute("SELECT body FROM messages WHERE body LIKE %s",
                                (f"{WRITE_MARKER} %",)).fetchall()
        return frozenset(body.split(" ", 1)[1] for (body,) in rows)

    def _read_job_records(self, state: RunState) -> None:
        """Job runs and fencing rejections since the run started, read from PostgreSQL, once
        every run in progress at the end has recorded its finish (or max_run_s has passed)."""
        state.phase = "reading job records"
        history = state.history
        since = history.mark_at("start") or 0.0
        end = history.mark_at("end") or time.time()
        source = job_source(self.lab)   # tables, a user's backend's logs, or its lock keys
        # A run whose node's process ended (kill, stop, restart) after it started never records
        # a finish.
        deaths: dict[str, list[float]] = {}
        for event in history.faults:
            if event.phase is FaultPhase.INJECT and event.effect.ends:
                deaths.setdefault(event.target, []).append(event.started_at)

        def pending(runs: list[JobRun]) -> list[JobRun]:
            return [r for r in runs if r.started_at <= end and r.finished_at is None
                    and not any(r.started_at <= t for t in deaths.get(r.node, ()))]

        # Runs that began after the end are outside the observation and left out.
        deadline = end + state.expectations.backend.max_run_s
        read: list[JobRun] = []

        def finished() -> list[JobRun] | None:
            read[:] = source.runs(since, end, history.lock_samples)
            return None if pending(read) else read

        poll(finished, deadline - time.time(), 0.2, sleep=state.sleep)
        history.job_runs.extend(read)
        history.fencing_rejections.extend(source.rejections(since))

    def _observe(self, state: RunState, needs: set[Observation]) -> dict[str, object]:
        """The observations the checks need; one that fails is recorded, not raised, so only
        the checks needing it are unknown."""
        made: list[str] = ([Observation.LOCK_SAMPLES.value] if Observation.LOCK_SAMPLES in needs
                           else [])
        unavailable: list[tuple[str, str]] = []
        if made and (why := job_source(self.lab).locks_unavailable) is not None:
            made, unavailable = [], [(Observation.LOCK_SAMPLES.value, why)]
        stored: frozenset[str] | None = None
        if Observation.JOB_RECORDS in needs:
            try:
                self._read_job_records(state)
                made.append(Observation.JOB_RECORDS.value)
            except Exception as exc:  # noqa: BLE001 - the checks that need it become unknown
                unavailable.append((Observation.JOB_RECORDS.value, f"{type(exc).__name__}: {exc}"))
        if Observation.STORED_WRITES in needs:
            try:
                stored = self._stored_writes()
            except Exception as exc:  # noqa: BLE001 - the checks that need it become unknown
                unavailable.append((Observation.STORED_WRITES.value,
                                    f"{type(exc).__name__}: {exc}"))
        return {"observed": tuple(made), "unavailable": tuple(unavailable), "stored_writes": stored}

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Run the scenario; faults are healed whatever happens."""
        lab, scenario = self.lab, self.scenario
        started_at = time.time()
        # Faults recorded by other processes (a manual break, a killed run) first, from their
        # records, then whatever a killed run left unrecorded (frozen nodes, fault sidecars).
        leftovers = fault_record.heal_recorded(lab) + heal_leftovers(lab)
        expectations = self.claimed or running(lab)
        streams = stream_facts(scenario, self.alongside)
        names = duration_names(expectations, streams["rate_per_s"],  # type: ignore[arg-type]
                               streams["client_timeout_s"])  # type: ignore[arg-type]
        state = RunState(lab, expectations, names, self.seed, self.on_progress,
                         self.ready_timeout_s,
                         origin=fault_record.Origin(kind="scenario",
                                                    name=f"scenario {scenario.name}"))
        state.notes.extend(leftovers)
        state.tick("steady state before")
        planned = self._planned_s(names)
        before = RunFacts(names=tuple(names.items()), planned_s=planned,
                          failure_modes=planned_failure_modes(scenario),
                          injections=planned_injections(scenario), **streams)  # type: ignore[arg-type]
        stated = predictions(scenario, expectations, before, self.objectives.values)
        self.on_predictions(stated)
        # NGINX logs upstreams as ip:port; the checks want node names.
        addresses = {f"{ip}:{lab.backend_port}": node for ip, node in lab.addresses().items()}
        # Quiescing follows the fail_timeout NGINX really runs, whatever the run is judged against.
        self._quiesce(state, lab.nginx_policy().upstream, addresses)
        lab.wait_all_ready(self.ready_timeout_s)
        state.history.mark("start", time.time())
        needs = self._needs()
        sampler = None
        try:
            if Observation.LOCK_SAMPLES in needs:
                # Redis's view of the lock holders all along the steps (bounded: stopped in
                # finally, and by its own deadline).
                sampler = job_source(lab).sampler(planned + 60 + self.step_wait_s)
            if sampler is not None:
                sampler.start()
            if self.alongside is not None:
                state.tick("starting the load beside the steps")
                self.alongside.start()
            if scenario.traffic:
                # The traffic outlasts the planned steps; it is finished when they end.
                state.traffic = TrafficRun(
                    lab.client_target(),
                    self._traffic_specs(state, planned + 30 + self.step_wait_s), self.seed)
                state.traffic.start()
            for index, step in enumerate(scenario.steps, start=1):
                definition = definition_of(step)
                self.before_step(index, definition.describe(step, names))
                try:
                    definition.run(state, step)
                except NoLockTaken as exc:
                    # What the system did (nobody took the job), judged like any other
                    # finding: the remaining steps need a holder there is not.
                    state.notes.append(f"step {index} ({definition.describe(step, names)}): "
                                       f"{exc.message}; steps {index + 1}.."
                                       f"{len(scenario.steps)} were not run")
                    state.history.mark(f"no-lock-taken:step-{index}", time.time())
                    break
        finally:
            if sampler is not None:
                sampler.stop()
                state.history.lock_samples.extend(sampler.samples)
                answered = len(sampler.samples) // len(sampler.jobs)
                state.notes.append(f"lock samples: {answered} answered, "
                                   f"{sampler.errors} failed")
            state.heal_all()
            end_watches(state)
            if self.alongside is not None:
                self.alongside.stop()
            if state.traffic is not None:
                state.tick("draining traffic")
                state.traffic.finish()
        history = state.history
        history.mark("end", time.time())
        state.tick("steady state after")
        lab.wait_all_ready(self.ready_timeout_s)
        history.requests.extend(state.traffic.records if state.traffic else [])
        if self.alongside is not None:
            records, notes = self.alongside.collect()
            history.requests.extend(records)
            state.notes.extend(notes)
        history.access_log.extend(self._access_log(started_at, addresses, history.requests))
        observed = self._observe(state, needs)
        state.tick("checking")
        facts = RunFacts(names=tuple(names.items()), planned_s=planned,
                         failure_modes=failure_modes((f.kind, f.target) for f in state.faults),
                         injections=injections((f.kind, f.target) for f in state.faults),
                         added_latency_s=state.added_latency_s,
                         targets=tuple(state.targets.items()),
                         **streams, **observed)  # type: ignore[arg-type]
        checks = judge(scenario, history, expectations, facts, self.objectives.values)
        self._note_check_predictions(state, expectations)
        return RunResult(
            scenario=scenario.name, description=scenario.description, lab=lab.name, seed=self.seed,
            started_at=started_at, finished_at=time.time(),
            verdict=combine(c.overall for c in checks), checks=checks, history=history,
            faults=tuple(state.faults), notes=tuple(state.notes), durations=tuple(names.items()),
            predictions=held(scenario, checks, stated), objectives=self.objectives,
            expectations=tuple(expectations.sources().items()),
            steps=tuple(definition_of(step).describe(step, names) for step in scenario.steps),
            facts=facts, config=lab.config.model_dump(mode="json"))

    def _access_log(self, started_at: float, addresses: dict[str, str],
                    requests: list[RequestRecord]) -> list[AccessLogEntry]:
        """NGINX's log lines since ``started_at``, once every client request is in it or
        ``LOG_SETTLE_S`` has passed.

        Docker copies a container's output to its log asynchronously, so a line NGINX wrote a
        moment ago (the 499 of a request whose client just gave up) can be missing from the
        first read on a busy machine; a check would then call that request "never logged".
        Requests NGINX really never saw (it was down) stay missing after the wait."""
        wanted = {r.request_id for r in requests if r.request_id}

        def read() -> list[AccessLogEntry]:
            log = self.lab.logs("nginx", tail="all", since=started_at - 1)
            return [e for e in parse_access_log(log, addresses) if e.msec >= started_at]

        def complete() -> list[AccessLogEntry] | None:
            entries = read()
            return entries if wanted <= {e.request_id for e in entries} else None

        found = poll(complete, LOG_SETTLE_S, 0.25)
        return found if found is not None else read()

    def _note_check_predictions(self, state: RunState, expectations: Expectations) -> None:
        """The notes each of the scenario's checks adds from the configuration (once a check)."""
        for name in dict.fromkeys(spec.check for spec in self.scenario.checks):
            notes = CHECKS.get(name).notes
            if notes is not None:
                state.notes.extend(notes(expectations))


def rejudge(result: RunResult, scenario: Scenario, expectations: Expectations,
            objectives: ObjectivesInForce | None = None) -> tuple[CheckResult, ...]:
    """A finished run's checks judged again against another expectations record (and
    objectives): the same measurement, read against another configuration."""
    if result.facts is None:
        raise ValueError("this result carries no run facts to judge again")
    in_force = objectives or result.objectives
    # Bounds written as expressions (recovery's `within`) mean what the other record implies.
    names = duration_names(expectations, result.facts.rate_per_s, result.facts.client_timeout_s)
    facts = replace(result.facts, names=tuple(names.items()))
    return judge(scenario, result.history, expectations, facts, in_force.values)

