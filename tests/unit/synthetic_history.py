"""Small building blocks of synthetic histories for the checks' unit tests: the default
upstream policy and single client records. Whole simulated runs of NGINX come from
``nginx_sim``."""

from __future__ import annotations

from lab.expectations import UpstreamPolicy
from lab.history import (
    Outcome,
    RequestRecord,
)

T0 = 1_700_000_000.0
SERVERS = ("backend-1", "backend-2", "backend-3")
NORMAL_S = 0.002


def policy(**changes: object) -> UpstreamPolicy:
    """The lab's default upstream policy with some fields changed."""
    values: dict[str, object] = {
        "name": "backend", "servers": SERVERS, "max_fails": 3, "fail_timeout_s": 4.0,
        "connect_timeout_s": 1.0, "read_timeout_s": 5.0,
        "next_upstream": ("error", "timeout", "http_502", "http_503", "http_504"),
        "zone": True, "worker_processes": 2, "balancing": "round_robin",
    }
    values.update(changes)
    return UpstreamPolicy(**values)  # type: ignore[arg-type]


def request(i: int, at: float, *, latency: float = NORMAL_S, backend: str | None = "backend-1",
            outcome: Outcome = Outcome.OK, status: int | None = 200) -> RequestRecord:
    """One client record at T0 + at."""
    return RequestRecord(id=i, client="probe-1", method="GET", path="/health",
                         intended_at=T0 + at, sent_at=T0 + at,
                         latency_s=latency if outcome is not Outcome.UNKNOWN else None,
                         status=status if outcome is not Outcome.UNKNOWN else None,
                         backend=backend, outcome=outcome)
