"""The contract of a user's backend image: how the lab talks to it and what it can observe.

The reference backend (``images/backend``) is built by the lab and needs no contract. A
backend of your own (``[backend] image = "name:tag"`` or ``build = "dir"``) is a black box, so
``lab.toml`` says how it listens, which environment variables carry the addresses the lab
gives it, where its health endpoints are, what its job schedule is, and how its job runs can
be seen from outside::

    [backend]
    image = "checklist-backend:1"

    [backend.contract]
    port = 3000
    database_url_env = "DATABASE_URL"
    redis_url_env = "REDIS_URL"
    node_id_env = "SERVER_ID"            # the lab sets it to backend-1, backend-2, ...
    job_runs = "logs"                    # or "table" (job_runs, as the reference) or "redis"

    [backend.contract.logs]
    acquired = 'Acquired lock for job: (?P<job>[\\w-]+)'
    skipped = 'Job lock held by another server: (?P<job>[\\w-]+)'
    released = 'Released lock for job: (?P<job>[\\w-]+)'

    [backend.contract.locks]
    key = "job-lock:{job}"
    holder = '^(?P<node>[^:]+):'

A check that needs an observation the contract does not give (say, lock samples without
``[backend.contract.locks]``) reports ``unknown`` and names the missing part.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

REFERENCE_JOBS = ("recurring-messages", "phone-linking-recovery")
# The reference backend's Redis key of a job's lock: <prefix><job> holding <node>|<hex>|<token>
# (images/backend/lab_backend/locks.py).
REFERENCE_LOCK_PREFIX = "lab:lock:"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _env_name(value: str | None) -> str | None:
    if value is not None and not _ENV_NAME.match(value):
        raise ValueError(f"{value!r} is not an environment variable name")
    return value


def _regex(groups: tuple[str, ...]):
    def check(value: str | None) -> str | None:
        if value is None:
            return value
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        missing = [g for g in groups if g not in compiled.groupindex]
        if missing:
            raise ValueError(f"the pattern must capture (?P<{missing[0]}>...)")
        return value
    return check


EnvName = Annotated[str, AfterValidator(_env_name)]
OptionalEnvName = Annotated[str | None, AfterValidator(_env_name)]
JobPattern = Annotated[str, AfterValidator(_regex(("job",)))]
OptionalJobPattern = Annotated[str | None, AfterValidator(_regex(("job",)))]
HolderPattern = Annotated[str, AfterValidator(_regex(("node",)))]
Path = Annotated[str, Field(pattern=r"^/")]


class HealthPaths(_Frozen):
    """Where the backend answers its health questions (each path starts with /)."""

    basic: Path = "/health"
    live: Path = "/health/live"
    ready: Path = "/health/ready"          # the lab waits for 200 here before it uses a node
    detailed: Path = "/health/detailed"


class LogPatterns(_Frozen):
    """Regular expressions for the backend's job log lines, each capturing ``(?P<job>...)``.

    A line's time is Docker's timestamp of it, unless the pattern also captures
    ``(?P<at>...)``: an ISO 8601 time the backend printed itself (more exact: Docker stamps a
    line when it reads it). ``(?P<tick>\\d+)`` and ``(?P<token>\\d+)``, when captured, give
    the run's tick and fencing token; without a tick, a run's tick is
    floor(start / job_interval), which assumes a schedule aligned to the interval."""

    acquired: JobPattern
    skipped: OptionalJobPattern = None
    released: OptionalJobPattern = None


class LockKeys(_Frozen):
    """The backend's Redis lock keys: ``key`` with ``{job}`` for the job's name, and a pattern
    capturing ``(?P<node>...)``, the holder's node id, from the key's value."""

    key: Annotated[str, Field(pattern=r"\{job\}")]
    holder: HolderPattern


class BackendContract(_Frozen):
    """How the lab runs and observes a backend image of your own."""

    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    # Set to the port the upstream names, when the image reads its port from one.
    port_env: OptionalEnvName = None
    database_url_env: EnvName = "DATABASE_URL"
    redis_url_env: EnvName = "REDIS_URL"
    # Set to the node's name; the backend should answer with X-Backend-Id: <that name>.
    node_id_env: OptionalEnvName = None
    # Set to the seeded user's password (user1@lab.test), for scenarios that log in.
    seed_password_env: OptionalEnvName = None
    env: dict[str, str] = Field(default_factory=dict)
    health: HealthPaths = HealthPaths()
    ready_timeout_s: Annotated[float, Field(gt=0, le=600)] = 60.0
    # What the backend's scheduler does (the lab cannot read it from a black box).
    jobs: tuple[str, ...] = REFERENCE_JOBS
    job_interval_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
    lock_ttl_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    job_duration_s: Annotated[float, Field(ge=0, le=3600)] = 0.5
    lock_renewal: bool = True
    fencing: bool = False
    dependency_timeout_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    drain_s: Annotated[float, Field(ge=0, le=60)] = 0.0
    job_runs: Literal["table", "logs", "redis"] = "logs"
    logs: LogPatterns | None = None
    locks: LockKeys | None = None

    @model_validator(mode="after")
    def _observation_named(self) -> BackendContract:
        if self.job_runs == "logs" and self.logs is None:
            raise ValueError("job_runs = \"logs\" needs [backend.contract.logs] with an "
                             "'acquired' pattern")
        if self.job_runs == "redis" and self.locks is None:
            raise ValueError("job_runs = \"redis\" needs [backend.contract.locks]")
        for name in self.env:
            _env_name(name)
        return self
