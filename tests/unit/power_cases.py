"""The power of the failover checks: the shipped scenarios' traffic and faults simulated
(``nginx_sim``) against an NGINX one step away from its configuration, judged by the real
checks. ``bench/power.py`` writes the detection table into docs/power.md from these cases;
``test_power.py`` runs a few seeds of each in CI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from nginx_sim import Fault, Nginx, Simulation, Stream, expectations, one_step

from lab.checks.availability import check_availability
from lab.checks.base import CheckResult, Verdict
from lab.checks.ejection import check_ejection
from lab.checks.latency import check_latency
from lab.checks.readmission import check_readmission
from lab.checks.routing import check_routing
from lab.expectations import FailureMode
from lab.history import History

READS = Stream(20.0, jitter_s=0.05)
WRITES = Stream(5.0, "POST", "/api/messages", "writes", jitter_s=0.2)


@dataclass(frozen=True)
class Shape:
    """One shipped scenario as the simulator plays it."""

    name: str
    fault: Fault
    streams: tuple[Stream, ...]
    duration_s: float
    mode: FailureMode | None
    changes: tuple[str, ...]          # the one-step changes this scenario's fault can reveal
    checks: tuple[str, ...] = ("ejection", "readmission", "availability", "latency")


SHAPES = (
    # The shipped timing: the fault, its wait (connect_timeout + max_fails * interval + 2),
    # the heal, the re-admission (about fail_timeout), a second round of the same.
    Shape("failover", Fault(mode="unreachable", kind="kill", inject_at=2.0, heal_at=5.4,
                            again=(17.5, 20.9)),
          (READS, WRITES), 36.0, FailureMode.UNREACHABLE,
          ("max_fails +1", "max_fails -1", "fail_timeout +2s", "fail_timeout -2s",
           "connect_timeout +25%")),
    Shape("failover-freeze", Fault(mode="frozen", kind="freeze", inject_at=2.0, heal_at=9.4,
                                   ready_after_s=0.0, again=(21.5, 28.9)),
          (READS, WRITES), 42.0, FailureMode.FROZEN,
          ("max_fails +1", "max_fails -1", "fail_timeout +2s", "fail_timeout -2s",
           "read_timeout +25%")),
    Shape("network-partition", Fault(mode="unreachable", kind="partition", inject_at=2.0,
                                     heal_at=5.4, ready_after_s=0.0),
          (READS,), 22.0, FailureMode.UNREACHABLE,
          ("max_fails +1", "max_fails -1", "fail_timeout +2s", "fail_timeout -2s",
           "connect_timeout +25%")),
    Shape("graceful-restart", Fault(mode="refused", kind="stop", inject_at=2.0, heal_at=5.0),
          (READS,), 20.0, FailureMode.REFUSED,
          ("max_fails +1", "max_fails -1", "fail_timeout +2s", "fail_timeout -2s"),
          ("routing", "availability")),
)


def judged(history: History, claimed: Nginx, shape: Shape) -> dict[str, CheckResult]:
    """The scenario's failover checks on ``history``, against the configuration ``claimed``."""
    expected = expectations(claimed.policy())
    reads = History(requests=[r for r in history.requests if r.client == "reads"],
                    faults=history.faults, access_log=history.access_log, marks=history.marks)
    judges = {
        "ejection": lambda: check_ejection(history, expected, shape.fault.target),
        "readmission": lambda: check_readmission(history, expected, shape.fault.target),
        "availability": lambda: check_availability(reads, expected),
        "routing": lambda: check_routing(history, expected),
        "latency": lambda: check_latency(reads, expected),
    }
    return {name: judges[name]() for name in shape.checks}


def trial(shape: Shape, change: str | None, seed: int,
          configure: Callable[[Nginx], Nginx] = lambda n: n) -> dict[str, CheckResult]:
    """One seeded run of ``shape`` by an NGINX ``change`` away from ``Nginx()``."""
    config = configure(Nginx())
    real = one_step(config, change) if change else config
    history = Simulation(nginx=real, streams=shape.streams, fault=shape.fault,
                         duration_s=shape.duration_s).run(seed)
    return judged(history, config, shape)


def detected(results: dict[str, CheckResult]) -> list[str]:
    """The checks whose conformance failed."""
    return [name for name, result in results.items() if result.verdict is Verdict.FAIL]


def shape(name: str) -> Shape:
    """A shape by scenario name."""
    return next(s for s in SHAPES if s.name == name)


def with_fault(shape_: Shape, **changes: object) -> Shape:
    """A shape with its fault changed."""
    return replace(shape_, fault=replace(shape_.fault, **changes))
