"""The scenario file format: a validated, typed description of one rehearsal.

    name: failover
    description: Kill backend-1 under traffic ...
    traffic:
      - {client: reads, rate: 20, path: /health}
    steps:
      - wait: 2
      - inject: {fault: kill, target: backend-1}
      - wait: "connect_timeout + max_fails * interval + 2"
      - heal: {fault: kill, target: backend-1}
      - wait_until_served: {node: backend-1, timeout: "fail_timeout + connect_timeout + 5"}
    checks:
      - ejection: {target: backend-1}
      - readmission: {target: backend-1}

Durations are seconds, or an arithmetic expression over the names in ``DURATION_NAMES``,
which come from the nginx.conf NGINX really runs and the scenario's traffic, so a scenario
adapts when lab.toml changes.
"""

from __future__ import annotations

import ast
import operator
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from lab.checks.locks import JOBS
from lab.faults.base import FAULT_KINDS

DURATION_NAMES = ("fail_timeout", "connect_timeout", "read_timeout", "max_fails", "interval", "rate",
                  "job_interval", "lock_ttl", "job_duration", "server_login_retry", "db_budget",
                  "dependency_timeout", "drain")
CHECK_NAMES = ("ejection", "readmission", "distribution", "availability", "durability", "latency",
               "lock_exclusivity", "fencing", "lock_takeover", "jobs_paused", "rate_limit",
               "tls", "security_headers", "rate_limit_headers", "health_contract", "fail_fast",
               "recovery", "pool_bound", "exposure", "lock_holders", "lock_after_store_restart",
               "health_startup", "health_drain", "health_detailed_timing")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def evaluate_duration(expression: float | str, names: dict[str, float]) -> float:
    """A duration: a number, or + - * / over numbers and the given names."""
    if isinstance(expression, int | float):
        return float(expression)

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise ValueError(f"unknown name {node.id!r} (names: {', '.join(DURATION_NAMES)})")
            return float(names[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        raise ValueError(f"not a duration expression: {ast.unparse(node)!r}")

    try:
        return walk(ast.parse(str(expression), mode="eval"))
    except SyntaxError:
        raise ValueError(f"not a duration expression: {expression!r}") from None


Duration = float | str


def _one_of(what: str, known: tuple[str, ...]) -> classmethod:
    """A field validator accepting only ``known`` names, naming them all otherwise."""

    def check(cls: type, value: str) -> str:
        if value not in known:
            raise ValueError(f"unknown {what} {value!r} ({what}s: {', '.join(known)})")
        return value

    return classmethod(check)


def _check_duration(value: Duration) -> Duration:
    # Validate names and syntax now (with dummy values) so a typo fails before anything starts.
    result = evaluate_duration(value, {name: 1.0 for name in DURATION_NAMES})
    if isinstance(value, int | float) and result < 0:
        raise ValueError("a duration cannot be negative")
    return value


class TrafficStream(_Strict):
    """One open-model request stream through NGINX."""

    client: str = "probe"
    rate: Annotated[float, Field(gt=0, le=2000)]
    path: str = "/health"
    method: Literal["GET", "POST", "PUT", "DELETE", "HEAD"] = "GET"
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    # None: the stream runs for the whole scenario; else it sends rate * duration_s requests.
    duration_s: Annotated[float | None, Field(gt=0, le=3600)] = None
    # A write stream logs in as a seeded user and posts messages whose body carries the
    # request id, so acknowledged writes can be looked up in PostgreSQL afterwards.
    writes: bool = False
    # Log in as a seeded user first and send its bearer token (reads of the API need one).
    auth: bool = False

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value


class FaultRef(_Strict):
    """A fault and its target: a node name, ``random`` or ``random:<role>`` (seeded), or
    ``holder:<job>``: the backend holding that job's lock when the step runs."""

    fault: str
    target: str
    peers: tuple[str, ...] = ()
    direction: Literal["both", "in", "out"] = "both"
    percent: Annotated[float, Field(ge=0, le=100)] = 0.0
    rate: str = "1mbit"
    delay_ms: Annotated[float, Field(ge=0, le=60_000)] = 0.0
    jitter_ms: Annotated[float, Field(ge=0, le=60_000)] = 0.0
    ports: tuple[int, ...] = ()

    _known_fault = field_validator("fault")(_one_of("fault", FAULT_KINDS))


class InjectStep(_Strict):
    inject: FaultRef


class HealStep(_Strict):
    heal: FaultRef | Literal["all"]


class WaitStep(_Strict):
    wait: Duration

    _duration = field_validator("wait")(classmethod(lambda cls, v: _check_duration(v)))


class ServedSpec(_Strict):
    node: str
    timeout: Duration

    _duration = field_validator("timeout")(classmethod(lambda cls, v: _check_duration(v)))


class WaitUntilServedStep(_Strict):
    """Wait until a client request is answered 2xx by ``node`` (re-admitted), or the timeout."""

    wait_until_served: ServedSpec


class AcquiredSpec(_Strict):
    job: str
    timeout: Duration = "3 * job_interval + 5"

    _duration = field_validator("timeout")(classmethod(lambda cls, v: _check_duration(v)))

    _known_job = field_validator("job")(_one_of("job", JOBS))


class WaitUntilAcquiredStep(_Strict):
    """Wait until a node newly takes ``job``'s lock (a fencing token not seen when the step
    began), so that the next step lands at the start of a run, not somewhere in it."""

    wait_until_acquired: AcquiredSpec


PROBES = ("security", "second-client", "health:healthy", "health:redis-down", "health:database-down",
          "pool", "pool-backends", "exposure")


class ProbeStep(_Strict):
    """Take samples now: ``security`` records answers of every kind with their headers (HTTP
    and HTTPS) and the certificate HTTPS serves; ``second-client`` sends a login burst from the
    host and, 50 ms later, one from a container on the lab network, a client with its own
    address (NGINX's limit key);
    ``health:<state>`` asks every backend's four health endpoints directly, labelled with the
    state the steps so far put the lab in; ``pool`` drives 300 clients through PgBouncer while
    sampling SHOW POOLS and pg_stat_activity, then opens one client more than max_client_conn;
    ``pool-backends`` samples the same while 90 HTTP clients in a container on the lab network
    ask the backends' database-backed API directly;
    ``exposure`` reads every lab container's published ports from Docker and tries one TCP
    connect to each on 127.0.0.1."""

    probe: str

    _known_probe = field_validator("probe")(_one_of("probe", PROBES))


class WatchSpec(_Strict):
    """A health watcher on one backend: its four health endpoints asked every ``interval_s``
    from a client container on the lab network, from this step until the steps end (at most
    ``for``), so restarts, drains and outages show as transitions."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    node: str
    interval_s: Annotated[float, Field(ge=0.01, le=1.0)] = 0.05
    max_duration: Duration = Field(120, alias="for")

    _duration = field_validator("max_duration")(classmethod(lambda cls, v: _check_duration(v)))


class WatchStep(_Strict):
    watch: WatchSpec


STEP_KINDS = ("inject", "heal", "wait", "wait_until_served", "wait_until_acquired", "probe", "watch")


def _step_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return next(iter(type(value).model_fields))
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in STEP_KINDS:
        return next(iter(value))
    return None


Step = Annotated[
    Annotated[InjectStep, Tag("inject")] | Annotated[HealStep, Tag("heal")]
    | Annotated[WaitStep, Tag("wait")] | Annotated[WaitUntilServedStep, Tag("wait_until_served")]
    | Annotated[WaitUntilAcquiredStep, Tag("wait_until_acquired")] | Annotated[ProbeStep, Tag("probe")]
    | Annotated[WatchStep, Tag("watch")],
    Discriminator(_step_kind, custom_error_type="step",
                  custom_error_message=f"each step is a mapping with one key: {', '.join(STEP_KINDS)}"),
]


class CheckSpec(_Strict):
    """One check and its parameters; which parameters are allowed depends on the check."""

    name: str
    target: str | None = None          # ejection, readmission, lock_takeover
    location: str | None = None        # rate_limit: the limited location prefix
    client: str | None = None          # availability, durability, latency, distribution: one stream
    slo: Annotated[float, Field(gt=0, le=1)] = 0.999
    tolerance_s: Annotated[float | None, Field(ge=0)] = None
    outside_p99_bound_s: Annotated[float, Field(gt=0)] = 0.5
    sigmas: Annotated[float, Field(gt=0)] = 4.0
    min_requests: Annotated[int, Field(ge=1)] = 100
    during: Literal["all", "steady"] = "all"   # distribution: whole run or before any fault
    within: Duration | None = None     # recovery: the bound, as a duration expression

    _within = field_validator("within")(classmethod(lambda cls, v: v if v is None else _check_duration(v)))

    @model_validator(mode="after")
    def _params_fit(self) -> CheckSpec:
        if self.name not in CHECK_NAMES:
            raise ValueError(f"unknown check {self.name!r} (checks: {', '.join(CHECK_NAMES)})")
        if self.name in ("ejection", "readmission", "lock_takeover") and not self.target:
            raise ValueError(f"check {self.name} needs a target node")
        if self.name in ("fail_fast", "recovery") and not self.client:
            raise ValueError(f"check {self.name} needs the client stream it judges")
        if self.name == "recovery" and self.within is None:
            raise ValueError("check recovery needs its bound: within (a duration expression)")
        if self.name == "rate_limit" and not self.location:
            raise ValueError("check rate_limit needs the location it limits (e.g. /api/auth/)")
        return self


class Scenario(_Strict):
    """A named rehearsal: traffic, timed steps, and the checks that judge the history."""

    name: str
    description: str
    traffic: tuple[TrafficStream, ...] = ()
    steps: tuple[Step, ...]
    checks: tuple[CheckSpec, ...]
    lab: dict[str, dict[str, Any]] = Field(default_factory=dict)  # lab.toml overrides, by section

    @field_validator("checks", mode="before")
    @classmethod
    def _checks(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise ValueError("must be a list of checks")  # noqa: TRY004 - pydantic reports ValueError only
        checks = []
        for item in value:
            if isinstance(item, str):
                item = {item: {}}
            if not isinstance(item, dict) or len(item) != 1:
                raise ValueError("each check is a name, or a mapping of one name to its parameters")
            name, params = next(iter(item.items()))
            checks.append({"name": name, **(params or {})})
        return checks

    @model_validator(mode="after")
    def _clients_known(self) -> Scenario:
        clients = {stream.client for stream in self.traffic}
        if len(clients) != len(self.traffic):
            raise ValueError("traffic streams need distinct client names")
        for check in self.checks:
            if check.client is not None and check.client not in clients:
                raise ValueError(f"check {check.name} names client {check.client!r}, which sends no traffic")
        return self
