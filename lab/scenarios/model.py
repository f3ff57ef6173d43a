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
    objectives:                 # optional: this scenario's thresholds over lab.toml's
      ejection: 10s

Steps, faults, probes and checks are registries (``lab.scenarios.steps``, ``lab.faults``,
``lab.scenarios.probes``, ``lab.checks``): an unknown name, or a parameter the entry does not
take, is refused when the file loads. Durations are seconds, or an arithmetic expression over
``DURATION_NAMES``, which come from the configuration the run is judged against and the
scenario's traffic, so a scenario adapts when lab.toml changes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    create_model,
    field_validator,
    model_validator,
)

from lab.checks import CHECKS
from lab.checks.registry import CheckParams
from lab.expectations import DURATION_NAMES
from lab.objectives import ObjectiveOverrides
from lab.registry import tagged_union
from lab.scenarios.steps import Step

__all__ = ["DURATION_NAMES", "CheckSpec", "Scenario", "TrafficStream"]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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
    # "jittered": each request leaves at a random moment of its slot (same count and rate),
    # so the schedule's period cannot line up with NGINX's timeouts (TrafficSpec.jitter).
    arrivals: Literal["even", "jittered"] = "even"

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value


def _check_model(name: str) -> type[CheckParams]:
    """A check item: the check's own parameters, plus its name as the tag ``check``."""
    return create_model(f"{name.title().replace('-', '')}Check", __base__=CHECKS.get(name).params,
                        check=(Literal[name], Field(exclude=True)))  # type: ignore[valid-type]


def _check_item(value: Any) -> Any:
    # A check is written `name` or `name: {params}`; an unknown name is refused here, with the
    # known ones and the nearest, before the union picks a member.
    if isinstance(value, str):
        value = {value: {}}
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError("each check is a name, or a mapping of one name to its parameters")
    name, params = next(iter(value.items()))
    if name not in CHECKS:
        raise ValueError(CHECKS.unknown(str(name)))
    if params is not None and not isinstance(params, dict):
        raise ValueError(f"the parameters of check {name} are a mapping")
    return {"check": name, **(params or {})}


def _check_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("check")
    return getattr(value, "check", None)


CheckSpec = Annotated[
    tagged_union(tuple(Annotated[_check_model(c.name), Tag(c.name)] for c in CHECKS)),
    Discriminator(_check_tag, custom_error_type="check",
                  custom_error_message=f"checks: {', '.join(CHECKS.names())}"),
    BeforeValidator(_check_item),
]


class Scenario(_Strict):
    """A named rehearsal: traffic, timed steps, the checks that judge the history, and the
    objectives this scenario sets over lab.toml's."""

    name: str
    description: str
    traffic: tuple[TrafficStream, ...] = ()
    steps: tuple[Step, ...]
    checks: tuple[CheckSpec, ...]
    objectives: ObjectiveOverrides | None = None  # type: ignore[valid-type]
    lab: dict[str, dict[str, Any]] = Field(default_factory=dict)  # lab.toml overrides, by section

    @model_validator(mode="after")
    def _clients_known(self) -> Scenario:
        clients = {stream.client for stream in self.traffic}
        if len(clients) != len(self.traffic):
            raise ValueError("traffic streams need distinct client names")
        for check in self.checks:
            client = getattr(check, "client", None)
            if client is not None and client not in clients:
                raise ValueError(f"check {check.check} names client {client!r}, "
                                 "which sends no traffic")
        return self
