"""The step registry: what a scenario's ``steps:`` may say, each a mapping with one key.

    - inject: {fault: kill, target: backend-1}      put a fault in place (FAULTS)
    - heal: {fault: kill, target: backend-1}        undo it (or ``heal: all``)
    - wait: "connect_timeout + max_fails * interval + 2"
    - wait_until_served: {node: backend-1, timeout: "fail_timeout + 5"}
    - wait_until_acquired: {job: recurring-messages}
    - probe: "health:redis-down"                    take samples now (PROBES)
    - watch: {node: backend-2, interval_s: 0.05}    poll one backend's health until the end

Each entry knows its model (unknown keys refused), how to run, how long it is planned to take,
the nodes it names (checked against the topology before anything starts) and how to say what
it does with the configuration's numbers filled in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import psycopg
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, create_model, field_validator

from lab.errors import ConfigError, LabError
from lab.expectations import DurationExpr, evaluate_duration, explain_duration
from lab.faults import FAULTS, FaultSpec
from lab.history import Outcome
from lab.registry import Registry, tagged_union
from lab.scenarios.probes import PROBES, parse_probe
from lab.scenarios.state import RunState, is_dynamic
from lab.waits import poll
from lab.workload.health_watch import HealthWatcher, HealthWatchSpec
from lab.workload.job_sources import job_source


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _known(registry: Registry[Any]) -> Callable[[Any, str], str]:
    def check(cls: type, value: str) -> str:
        if value not in registry:
            raise ValueError(registry.unknown(value))
        return value
    return classmethod(check)  # type: ignore[return-value]


# -- models ---------------------------------------------------------------------------------------


def _inject_model(name: str) -> type[BaseModel]:
    """``{fault: <name>, target: ..., <its parameters>}``: the fault's own parameters only."""
    definition = FAULTS.get(name)
    return create_model(f"Inject{name.title()}", __base__=definition.params,
                        fault=(Literal[name], ...))  # type: ignore[valid-type]


def _fault_tag(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return getattr(value, "fault", None)
    if isinstance(value, dict):
        return value.get("fault")
    return None


def _fault_name(value: Any) -> Any:
    # An unknown fault is named with the known ones before the union picks a member.
    name = _fault_tag(value)
    if isinstance(value, dict) and name is not None and name not in FAULTS:
        raise ValueError(FAULTS.unknown(str(name)))
    return value


InjectRef = Annotated[
    tagged_union(tuple(Annotated[_inject_model(f.name), Tag(f.name)] for f in FAULTS)),
    Discriminator(_fault_tag, custom_error_type="fault",
                  custom_error_message="a fault needs 'fault:' "
                                       f"(faults: {', '.join(FAULTS.names())})"),
]


class InjectStep(_Strict):
    inject: InjectRef

    _name = field_validator("inject", mode="before")(classmethod(lambda cls, v: _fault_name(v)))


class HealRef(_Strict):
    """Which active fault to undo: its kind and the target it was injected on."""

    fault: str
    target: str

    _known_fault = field_validator("fault")(_known(FAULTS))


class HealStep(_Strict):
    heal: HealRef | Literal["all"]


class WaitStep(_Strict):
    wait: DurationExpr


class ServedSpec(_Strict):
    node: str
    timeout: DurationExpr


class WaitUntilServedStep(_Strict):
    """Wait until a client request is answered 2xx by ``node`` (re-admitted), or the timeout."""

    wait_until_served: ServedSpec


class AcquiredSpec(_Strict):
    job: str
    timeout: DurationExpr = "3 * job_interval + 5"

    # Which jobs exist depends on the backend (a contract names its own): the job is checked
    # against the lab's configuration with the nodes (loader.check_nodes), before any start.


class WaitUntilAcquiredStep(_Strict):
    """Wait until a node newly takes ``job``'s lock (a fencing token not seen when the step
    began; without tokens, the lock taken after it was free or another node's) and has recorded
    the run, so that the next step lands at the start of a run, not somewhere in it or before."""

    wait_until_acquired: AcquiredSpec


class ProbeStep(_Strict):
    """Take samples now: one of the registered probes (``lab.scenarios.probes``)."""

    probe: str

    @field_validator("probe")
    @classmethod
    def _known_probe(cls, value: str) -> str:
        try:
            parse_probe(value)
        except ConfigError as exc:
            raise ValueError(exc.message) from None
        return value


class WatchSpec(_Strict):
    """A health watcher on one backend: its four health endpoints asked every ``interval_s``
    from a client container on the lab network, from this step until the steps end (at most
    ``for``), so restarts, drains and outages show as transitions."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    node: str
    interval_s: Annotated[float, Field(ge=0.01, le=1.0)] = 0.05
    max_duration: DurationExpr = Field(120, alias="for")


class WatchStep(_Strict):
    watch: WatchSpec


# -- running ---------------------------------------------------------------------------------------


def _inject(state: RunState, step: InjectStep) -> None:
    ref = step.inject
    node = state.resolve(ref.target)
    params = FAULTS.get(ref.fault).params.model_validate(
        {**ref.model_dump(exclude={"fault"}), "target": node})
    state.inject(FaultSpec(ref.fault, params, seed=state.seed))


def _heal(state: RunState, step: HealStep) -> None:
    if step.heal == "all":
        for kind, target in list(state.active):
            state.heal(kind, target)
        return
    ref = step.heal
    assert isinstance(ref, HealRef)
    target = ref.target
    if is_dynamic(target):
        # A dynamic target was resolved at inject: heal the node it resolved to.
        target = state.targets.get(target) or next(
            (t for kind, t in reversed(list(state.active)) if kind == ref.fault), target)
    state.heal(ref.fault, target)


def _wait(state: RunState, step: WaitStep) -> None:
    state.phase = f"wait {step.wait}"
    state.sleep(evaluate_duration(step.wait, state.names))


def _wait_until_served(state: RunState, step: WaitUntilServedStep) -> None:
    spec = step.wait_until_served
    node = state.resolve(spec.node)
    timeout_s = evaluate_duration(spec.timeout, state.names)
    state.tick(f"waiting for {node} to serve")
    since = time.time()

    def served() -> bool:
        records = state.traffic.records if state.traffic else []
        return any(r.backend == node and r.outcome is Outcome.OK and r.sent_at >= since
                   for r in records)

    if not poll(served, timeout_s, 0.2, sleep=state.sleep):
        state.notes.append(f"{node} did not serve within {timeout_s:.1f} s")


def newly_taken(seen: list[tuple[str | None, int | None]]) -> bool:
    """Whether the last of a job's lock answers (holder, token), oldest first, is a run begun
    since the first: a lock held at the first answer belongs to a run already under way. A
    token not seen then is a new run; a lock without one (a contract's holder pattern may name
    no token) is new when the answer before had it free or held by another node."""
    if len(seen) < 2 or seen[-1][0] is None:
        return False
    holder, token = seen[-1]
    return token != seen[0][1] if token is not None else seen[-2][0] != holder


def _wait_until_acquired(state: RunState, step: WaitUntilAcquiredStep) -> None:
    spec = step.wait_until_acquired
    state.tick(f"waiting for a new holder of {spec.job}")
    since = time.time()
    seen: list[tuple[str | None, int | None]] = []
    taken: list[int | None] = []

    def fresh(locks: dict[str, tuple[str, int | None]]) -> str | None:
        seen.append(locks.get(spec.job, (None, None)))
        if not newly_taken(seen):
            return None
        holder, token = seen[-1]
        taken.append(token)
        return holder

    node = state.poll_locks(evaluate_duration(spec.timeout, state.names), fresh,
                            f"no backend newly took the lock of job {spec.job!r}")
    state.history.mark(f"acquired:{spec.job}:{node}", time.time())
    # The holder takes the lock, then claims the tick and records its run (about 30 ms, more on
    # a busy machine): a fault issued in between hits no run, and the step's point is that the
    # next one lands in a run. So the step ends when the run is recorded where the checks read it.
    source = job_source(state.lab)
    if not poll(lambda: source.run_recorded(spec.job, node, since, taken[-1]),
                state.expectations.backend.job_duration_s + 5, 0.02,
                ignore=(psycopg.Error, LabError), sleep=state.sleep):
        state.notes.append(f"{node} took the lock of {spec.job} but recorded no run")


def _probe(state: RunState, step: ProbeStep) -> None:
    probe, argument = parse_probe(step.probe)
    probe.run(state, argument)


def _watch(state: RunState, step: WatchStep) -> None:
    """Start a health watcher on a backend; returns once it has had an answer on every path."""
    spec = step.watch
    node = state.resolve(spec.node)
    if state.lab.roles.get(node) != "backend":
        raise LabError(f"watch {node}: only backends have health endpoints to watch")
    state.tick(f"starting a health watch on {node}")
    # Longer than the slowest health answer: each dependency check waits the timeout at most.
    timeout = 2 * state.lab.config.backend.dependency_timeout_s + 1
    watcher = HealthWatcher(state.lab, HealthWatchSpec(
        node, state.lab.backend_port, spec.interval_s,
        evaluate_duration(spec.max_duration, state.names), timeout))
    watcher.start()
    state.watchers.append(watcher)


def end_watches(state: RunState) -> None:
    """Stop every health watcher and add what it saw to the history."""
    for watcher in state.watchers:
        try:
            result = watcher.stop()
        except LabError as exc:
            state.notes.append(str(exc))
            continue
        state.history.health_samples.extend(result.samples)
        state.history.health_watches.append(result.watch)
        state.notes.append(f"health watch on {result.watch.node}: {result.watch.samples} samples "
                           f"over {result.watch.ended_at - result.watch.started_at:.1f} s "
                           f"({result.watch.note})")
    state.watchers.clear()


# -- describing ------------------------------------------------------------------------------------


def _describe_inject(step: InjectStep, names: Mapping[str, float]) -> str:
    ref = step.inject
    definition = FAULTS.get(ref.fault)
    extra = ref.model_dump(exclude={"fault", "target"}, exclude_defaults=True)
    params = "".join(f", {k} {v}" for k, v in extra.items())
    return f"inject {ref.fault} on {ref.target}{params}: {definition.summary}"


def _describe_heal(step: HealStep, names: Mapping[str, float]) -> str:
    if step.heal == "all":
        return "heal every fault still in place"
    ref = step.heal
    assert isinstance(ref, HealRef)
    wait = " and wait until it is ready" if FAULTS.get(ref.fault).lifecycle else ""
    return f"heal {ref.fault} on {ref.target}{wait}"


def _describe_probe(step: ProbeStep, names: Mapping[str, float]) -> str:
    probe, argument = parse_probe(step.probe)
    return f"probe {step.probe}: {probe.summary}" + (f" ({argument})" if argument else "")


# -- the registry ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepDef:
    """One registered step kind: its key in the file, its model, and how it runs."""

    name: str
    model: type[BaseModel]
    run: Callable[[RunState, Any], None]
    describe: Callable[[Any, Mapping[str, float]], str]
    # Seconds the step is planned to take (a heal waits for readiness: part of the timeout).
    planned_s: Callable[[Any, Mapping[str, float], float], float] = lambda step, names, ready: 0.0
    # (field, node) pairs the step names, checked against the topology before anything starts.
    nodes: Callable[[Any], Iterator[tuple[str, str]]] = lambda step: iter(())


STEPS: Registry[StepDef] = Registry("step")


def _inject_nodes(step: InjectStep) -> Iterator[tuple[str, str]]:
    yield "inject.target", step.inject.target
    for peer in getattr(step.inject, "peers", ()):
        yield "inject.peers", peer


def _heal_nodes(step: HealStep) -> Iterator[tuple[str, str]]:
    if isinstance(step.heal, HealRef):
        yield "heal.target", step.heal.target


STEPS.add(StepDef("inject", InjectStep, _inject, _describe_inject,
                  planned_s=lambda step, names, ready: 0.0, nodes=_inject_nodes))
STEPS.add(StepDef("heal", HealStep, _heal, _describe_heal,
                  planned_s=lambda step, names, ready: ready / 4, nodes=_heal_nodes))
STEPS.add(StepDef("wait", WaitStep, _wait,
                  lambda step, names: f"wait {explain_duration(step.wait, names)}",
                  planned_s=lambda step, names, ready: evaluate_duration(step.wait, names)))
STEPS.add(StepDef(
    "wait_until_served", WaitUntilServedStep, _wait_until_served,
    lambda step, names: (f"wait until {step.wait_until_served.node} answers a client again, "
                         f"at most {explain_duration(step.wait_until_served.timeout, names)}"),
    planned_s=lambda step, names, ready: evaluate_duration(step.wait_until_served.timeout, names),
    nodes=lambda step: iter([("wait_until_served.node", step.wait_until_served.node)])))
STEPS.add(StepDef(
    "wait_until_acquired", WaitUntilAcquiredStep, _wait_until_acquired,
    lambda step, names: (f"wait until a backend newly takes the lock of "
                         f"{step.wait_until_acquired.job}, at most "
                         f"{explain_duration(step.wait_until_acquired.timeout, names)}"),
    planned_s=lambda step, names, ready: evaluate_duration(step.wait_until_acquired.timeout,
                                                           names)))
STEPS.add(StepDef("probe", ProbeStep, _probe, _describe_probe))
STEPS.add(StepDef(
    "watch", WatchStep, _watch,
    lambda step, names: (f"watch {step.watch.node}'s health endpoints every "
                         f"{step.watch.interval_s * 1000:g} ms until the steps end"),
    nodes=lambda step: iter([("watch.node", step.watch.node)])))


def step_kind(value: Any) -> str | None:
    """The key of a step: a model's only field, or a one-key mapping's key."""
    if isinstance(value, BaseModel):
        return next(iter(type(value).model_fields))
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in STEPS:
        return next(iter(value))
    return None


def definition_of(step: BaseModel) -> StepDef:
    """The registered kind of a parsed step."""
    kind = step_kind(step)
    assert kind is not None
    return STEPS.get(kind)


Step = Annotated[
    tagged_union(tuple(Annotated[d.model, Tag(d.name)] for d in STEPS)),
    Discriminator(step_kind, custom_error_type="step",
                  custom_error_message="each step is a mapping with one key: "
                                       f"{', '.join(STEPS.names())}"),
]

__all__ = ["PROBES", "STEPS", "HealRef", "InjectStep", "ProbeStep", "Step", "StepDef", "WaitStep",
           "WatchSpec", "definition_of", "end_watches", "step_kind"]
