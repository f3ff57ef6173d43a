"""Checks: pure functions from a history and the rendered configuration to a ``CheckResult``.

A check never talks to Docker or the network. Every expected value carries the text of how it
was derived from the configuration, so a reader can redo the arithmetic.

- ``ejection``: how long NGINX kept routing to a failed backend (``FailureMode`` sets the
  cost of one failed attempt);
- ``readmission``: how soon a healed backend served clients again;
- ``distribution``: each backend's share of answers;
- ``availability``: success ratio against an SLO; ``durability``: acknowledged writes lost;
- ``latency``: p50/p99 inside and outside fault windows;
- ``locks``: job-lock exclusivity, fencing, takeover after a holder dies, jobs paused while
  Redis is down;
- ``rate_limit``: NGINX's limit_req leaky bucket, evaluated on NGINX's own timestamps;
- ``pool``: PgBouncer's server connections against the pool bound;
- ``security``: TLS certificate and security headers.
"""

from lab.checks.availability import check_availability, check_durability
from lab.checks.base import CheckResult, Verdict, combine, never_crashes
from lab.checks.distribution import check_distribution
from lab.checks.ejection import FailureMode, check_ejection, failed_attempt_cost, upstream_attempts
from lab.checks.latency import check_latency, percentile
from lab.checks.readmission import check_readmission, ready_mark

__all__ = [
    "CheckResult",
    "FailureMode",
    "Verdict",
    "check_availability",
    "check_distribution",
    "check_durability",
    "check_ejection",
    "check_latency",
    "check_readmission",
    "combine",
    "failed_attempt_cost",
    "never_crashes",
    "percentile",
    "ready_mark",
    "upstream_attempts",
]
