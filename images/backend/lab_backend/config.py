"""The environment contract: every ``LAB_*`` variable, its default, and its validation."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

SECRET_VARS = ("LAB_TOKEN_SECRET", "LAB_ADMIN_TOKEN", "LAB_WEBHOOK_SECRET", "LAB_SEED_PASSWORD")


class ConfigurationError(Exception):
    """The environment does not describe a runnable backend (missing secret, bad number)."""


@dataclass(frozen=True)
class Settings:
    """The backend's configuration, read once at startup from the environment."""

    node_id: str
    database_url: str
    redis_url: str
    port: int
    token_secret: str
    admin_token: str
    webhook_secret: str
    seed_password: str
    job_interval_s: float
    lock_ttl_s: float
    job_duration_s: float
    dependency_timeout_s: float
    locking: bool
    fencing: bool
    lock_renewal: bool
    # Negative control only: a health check that never asks Redis (the checklist's mistake).
    health_checks_redis: bool
    # Negative control only: readiness that ignores startup and draining (ready as soon as the
    # process listens, and still ready while it drains).
    readiness_gates: bool
    stop_timeout_s: float
    drain_s: float
    token_ttl_s: int
    max_body_bytes: int = 64 * 1024

    def __repr__(self) -> str:
        # Secrets must never reach a log line or a traceback through repr().
        return f"Settings(node_id={self.node_id!r}, port={self.port}, ...)"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the ``LAB_*`` variables; raise ConfigurationError with every
        problem."""
        env = os.environ if env is None else env
        problems: list[str] = []

        def text(name: str, default: str) -> str:
            return env.get(name, "").strip() or default

        def number(name: str, default: float, low: float, high: float) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                problems.append(f"{name}={raw!r} is not a number")
                return default
            if not low <= value <= high:
                problems.append(f"{name}={raw} is outside [{low}, {high}]")
                return default
            return value

        def flag(name: str, default: bool) -> bool:
            raw = env.get(name, "").strip().lower()
            if not raw:
                return default
            if raw in ("1", "true", "yes", "on"):
                return True
            if raw in ("0", "false", "no", "off"):
                return False
            problems.append(f"{name}={raw!r} is not 0 or 1")
            return default

        missing = [name for name in SECRET_VARS if not env.get(name, "").strip()]
        if missing:
            problems.append("missing secret(s): " + ", ".join(missing))

        settings = cls(
            node_id=text("LAB_NODE_ID", "backend-1"),
            database_url=text("LAB_DATABASE_URL", "postgresql://app@pgbouncer:6432/app"),
            redis_url=text("LAB_REDIS_URL", "redis://redis:6379/0"),
            port=int(number("LAB_PORT", 8000, 1, 65535)),
            token_secret=env.get("LAB_TOKEN_SECRET", "").strip(),
            admin_token=env.get("LAB_ADMIN_TOKEN", "").strip(),
            webhook_secret=env.get("LAB_WEBHOOK_SECRET", "").strip(),
            seed_password=env.get("LAB_SEED_PASSWORD", "").strip(),
            job_interval_s=number("LAB_JOB_INTERVAL_S", 2.0, 0.05, 3600),
            lock_ttl_s=number("LAB_LOCK_TTL_S", 10.0, 0.05, 3600),
            job_duration_s=number("LAB_JOB_DURATION_S", 0.5, 0, 3600),
            dependency_timeout_s=number("LAB_DEPENDENCY_TIMEOUT_S", 1.0, 0.05, 10),
            locking=flag("LAB_LOCKING", True),
            fencing=flag("LAB_FENCING", True),
            lock_renewal=flag("LAB_LOCK_RENEWAL", True),
            health_checks_redis=flag("LAB_HEALTH_CHECKS_REDIS", True),
            readiness_gates=flag("LAB_READINESS_GATES", True),
            stop_timeout_s=number("LAB_STOP_TIMEOUT_S", 10.0, 1, 300),
            drain_s=number("LAB_DRAIN_S", 1.0, 0, 60),
            token_ttl_s=int(number("LAB_TOKEN_TTL_S", 3600, 1, 86400 * 30)),
        )
        if settings.drain_s >= settings.stop_timeout_s:
            problems.append("LAB_DRAIN_S must be shorter than LAB_STOP_TIMEOUT_S")
        if problems:
            raise ConfigurationError("; ".join(problems))
        return settings
