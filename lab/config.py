"""The lab's configuration: the deployment checklist's numbers as validated, typed defaults.

Every number a check compares against comes from here (through the rendered configuration),
never from a constant inside a check. A ``lab.toml`` overrides any field::

    [nginx]
    max_fails = 3
    fail_timeout_s = 10

    [pgbouncer]
    default_pool_size = 30
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lab.contract import REFERENCE_JOBS, BackendContract
from lab.errors import ConfigError

DEFAULT_CONFIG_FILE = "lab.toml"
LAB_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")

NextUpstream = Literal[
    "error", "timeout", "invalid_header", "http_500", "http_502", "http_503", "http_504",
    "http_403", "http_404", "http_429", "non_idempotent", "off",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RateLimitZone(_Frozen):
    """One ``limit_req_zone`` and the location prefix it guards."""

    name: str
    location: str
    rate_per_s: Annotated[int, Field(gt=0, le=100_000)]
    burst: Annotated[int, Field(ge=0, le=100_000)] = 0
    nodelay: bool = True


def _default_zones() -> tuple[RateLimitZone, ...]:
    return (
        RateLimitZone(name="auth", location="/api/auth/", rate_per_s=10, burst=5),
        RateLimitZone(name="api", location="/api/", rate_per_s=100, burst=0),
        RateLimitZone(name="webhook", location="/webhooks/", rate_per_s=50, burst=0),
    )


class NginxConfig(_Frozen):
    """The load balancer: passive health checks, timeouts, rate limits, TLS host name."""

    max_fails: Annotated[int, Field(ge=0, le=100)] = 3
    fail_timeout_s: Annotated[int, Field(ge=1, le=3600)] = 10
    connect_timeout_s: Annotated[float, Field(gt=0, le=75)] = 1.0
    read_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    next_upstream: tuple[NextUpstream, ...] = ("error", "timeout", "http_502", "http_503",
                                               "http_504")
    # A shared zone makes the failure counters global instead of per worker process.
    zone: bool = True
    worker_processes: Annotated[int, Field(ge=1, le=64)] = 2
    rate_limits: tuple[RateLimitZone, ...] = Field(default_factory=_default_zones)
    rate_limit_status: Annotated[int, Field(ge=400, le=599)] = 429
    server_name: str = "lab.local"
    hsts_max_age_s: Annotated[int, Field(ge=0)] = 31_536_000
    security_headers: bool = True
    # Your own nginx.conf or conf.d file (lab.topology.user_nginx): run instead of the rendered one.
    conf: str | None = None
    # With several upstream blocks in ``conf``: the backend pool (default: the block the
    # traffic's "/" is proxied to).
    upstream: str | None = None


class PgBouncerConfig(_Frozen):
    """The connection pooler between the backends and PostgreSQL."""

    pool_mode: Literal["session", "transaction", "statement"] = "transaction"
    default_pool_size: Annotated[int, Field(ge=1, le=10_000)] = 30
    reserve_pool_size: Annotated[int, Field(ge=0, le=10_000)] = 0
    max_client_conn: Annotated[int, Field(ge=1, le=100_000)] = 1000
    query_wait_timeout_s: Annotated[int, Field(ge=0)] = 120
    # After a failed login to PostgreSQL, PgBouncer refuses new server logins this long.
    server_login_retry_s: Annotated[int, Field(ge=0, le=3600)] = 15
    # Your own pgbouncer.ini (and userlist.txt), the lab's database address and credentials
    # substituted (lab.topology.user_pgbouncer).
    ini: str | None = None
    userlist: str | None = None


class PostgresConfig(_Frozen):
    """The database; ``max_connections`` bounds what PgBouncer may open."""

    database: str = "app"
    user: str = "app"
    max_connections: Annotated[int, Field(ge=10, le=10_000)] = 100
    # Off trades durability for speed: a commit is acknowledged before its WAL is written.
    # Negative controls use it to lose acknowledged writes on a crash.
    synchronous_commit: bool = True
    wal_writer_delay_ms: Annotated[int, Field(ge=1, le=10_000)] = 200


class RedisConfig(_Frozen):
    """The lock service's store; persistence off by default, as in the checklist."""

    persistence: bool = False


class BackendConfig(_Frozen):
    """The reference service replicas and their scheduled jobs."""

    replicas: Annotated[int, Field(ge=1, le=9)] = 3
    job_interval_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
    lock_ttl_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    job_duration_s: Annotated[float, Field(ge=0, le=3600)] = 0.5
    dependency_timeout_s: Annotated[float, Field(gt=0, le=10)] = 1.0
    # Negative controls only: a backend without locks or fencing must make checks fail.
    locking: bool = True
    fencing: bool = True
    lock_renewal: bool = True          # off: the lease never outlives its first TTL
    health_checks_redis: bool = True
    readiness_gates: bool = True         # False: readiness ignores startup and draining
    stop_timeout_s: Annotated[int, Field(ge=1, le=300)] = 10
    # After SIGTERM: readiness 503 for this long while requests are still served (LAB_DRAIN_S).
    drain_s: Annotated[float, Field(ge=0, le=60)] = 1.0
    # Your own backend instead of the reference one: an image, or a folder to build, run
    # under a contract (lab.contract).
    image: str | None = None
    build: str | None = None
    contract: BackendContract | None = None

    @model_validator(mode="after")
    def _drain_within_stop(self) -> BackendConfig:
        # The backend refuses to start otherwise (LAB_DRAIN_S < LAB_STOP_TIMEOUT_S): say it now.
        if self.drain_s >= self.stop_timeout_s:
            raise ValueError("drain_s must be shorter than stop_timeout_s")
        if self.image is not None and self.build is not None:
            raise ValueError("give image or build, not both")
        if (self.image is not None or self.build is not None) != (self.contract is not None):
            raise ValueError("a backend image (image or build) needs [backend.contract], and a "
                             "contract needs an image or build")
        return self

    @property
    def jobs(self) -> tuple[str, ...]:
        """The scheduled jobs: the reference backend's, or the ones a contract names."""
        return self.contract.jobs if self.contract is not None else REFERENCE_JOBS


class PublishConfig(_Frozen):
    """Host ports, always on 127.0.0.1; 0 means an ephemeral port chosen by Docker."""

    nginx_http: Annotated[int, Field(ge=0, le=65535)] = 0
    nginx_https: Annotated[int, Field(ge=0, le=65535)] = 0
    pgbouncer: Annotated[int, Field(ge=0, le=65535)] = 0
    postgres: Annotated[int, Field(ge=0, le=65535)] = 0
    redis: Annotated[int, Field(ge=0, le=65535)] = 0


class BuildConfig(_Frozen):
    """How images are built: the base image and the CA bundle trusted for HTTPS fetches."""

    base_image: str = "debian:bookworm"
    # None: the host's system bundle when it exists. "" disables the option.
    ca_bundle: str | None = None
    # Debian mirror used when the base must be bootstrapped (no registry reachable).
    debian_mirror: str = "http://deb.debian.org/debian"


class LabConfig(_Frozen):
    """Everything that defines one lab; two labs differ only in ``name`` and what follows."""

    name: str = "default"
    nginx: NginxConfig = NginxConfig()
    pgbouncer: PgBouncerConfig = PgBouncerConfig()
    postgres: PostgresConfig = PostgresConfig()
    redis: RedisConfig = RedisConfig()
    backend: BackendConfig = BackendConfig()
    publish: PublishConfig = PublishConfig()
    build: BuildConfig = BuildConfig()

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not LAB_NAME_RE.match(value):
            raise ValueError("must be 1-31 lowercase letters, digits or '-', starting alphanumeric")
        return value

    def with_name(self, name: str | None) -> LabConfig:
        """This configuration under another lab name (validated)."""
        if name is None or name == self.name:
            return self
        return parse_config({**self.model_dump(), "name": name}, source="--name")

    def with_overrides(self, section: str, **values: object) -> LabConfig:
        """A copy with fields of one section replaced, validated like a file."""
        data = self.model_dump()
        data[section] = {**data[section], **values}
        return parse_config(data, source=f"override of [{section}]")

    @property
    def backend_names(self) -> tuple[str, ...]:
        return tuple(f"backend-{i}" for i in range(1, self.backend.replicas + 1))


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "(top level)"
        lines.append(f"  {field}: {item['msg']}")
    return "\n".join(lines)


def parse_config(data: dict, *, source: str = "configuration") -> LabConfig:
    """Validate a mapping into a ``LabConfig``; errors name the field and the problem."""
    try:
        return LabConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source), hint="fix the field named above") from None


def config_path(path: Path | None) -> Path | None:
    """The configuration file in force: the one given, or ./lab.toml when present, else None."""
    if path is None:
        candidate = Path(DEFAULT_CONFIG_FILE)
        return candidate if candidate.is_file() else None
    return path


def read_toml(path: Path) -> dict:
    """A TOML file as a mapping; a missing or malformed file is a ConfigError naming it."""
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


# Fields of lab.toml that name files, resolved relative to lab.toml's folder.
PATH_FIELDS = (("nginx", "conf"), ("pgbouncer", "ini"), ("pgbouncer", "userlist"),
               ("backend", "build"))


def absolute_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """lab.toml data with the file fields made absolute against ``base`` (lab.toml's folder)."""
    out = dict(data)
    for section, name in PATH_FIELDS:
        table = out.get(section)
        if isinstance(table, dict) and isinstance(table.get(name), str) and table[name]:
            out[section] = {**table, name: str((base / Path(table[name]).expanduser()).resolve())}
    return out


def load_config(path: Path | None = None, *, name: str | None = None) -> LabConfig:
    """Read ``lab.toml`` (explicit path, or ./lab.toml when present, else the defaults).

    Its ``[objectives]`` table is not part of the lab's configuration (a lab runs the same
    whatever it is judged against): ``lab.objectives.load_objectives`` reads it."""
    path = config_path(path)
    data = read_toml(path) if path is not None else {}
    data.pop("objectives", None)
    if path is not None:
        data = absolute_paths(data, Path(path).resolve().parent)
    data.pop("load", None)      # how load runs are given compute: LoadConfig, below
    config = parse_config(data, source=str(path or "defaults"))
    return config.with_name(name)


def _default_cpus() -> dict[str, float]:
    # 1.6 of this machine's 2 cores for the whole system, the rest for the generator; /health
    # uses NGINX and the backends only (1.05). PgBouncer at 0.1 ran out at 80 conversation
    # requests/s (111 transactions/s), so it gets a quarter core like a backend.
    return {"nginx": 0.3, "backend": 0.25, "pgbouncer": 0.25, "postgres": 0.3, "redis": 0.05}


class LoadConfig(_Frozen):
    """``[load]`` of lab.toml: how ``lab load`` gives the system and the generator compute.

    Like ``[objectives]`` it is not part of a lab's configuration: a lab runs the same
    whatever load it is given. During a load run each node is held to its role's CPU quota
    (``backend`` is per backend), so the generator never takes the system's compute and three
    backends have three times one backend's; the quotas are lifted when the load ends."""

    quotas: bool = True
    cpus: dict[Literal["nginx", "backend", "pgbouncer", "postgres", "redis"],
               Annotated[float, Field(gt=0, le=64)]] = Field(default_factory=_default_cpus)
    # Where k6 runs: a container on the lab network, each VU with its own client address
    # (like many users), or the host, through the published 127.0.0.1 port (one address).
    generator: Literal["network", "host"] = "network"
    client_addresses: Annotated[int, Field(ge=1, le=120)] = 100


def load_load_config(path: Path | None = None) -> LoadConfig:
    """The ``[load]`` table of lab.toml (``path`` None: ./lab.toml when present), validated."""
    path = config_path(path)
    data: dict = (read_toml(path).get("load") or {}) if path is not None else {}
    if isinstance(data.get("cpus"), dict):
        # A role named in [load.cpus] replaces its default; the others keep theirs.
        data = {**data, "cpus": {**_default_cpus(), **data["cpus"]}}
    try:
        return LoadConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, f"{path or 'defaults'} [load]"),
                          hint="fix the field named above") from None
