"""Checks: pure judgements of a history against the expectations record (``lab.expectations``).

A check never talks to Docker or the network. Every expected value carries the text of how it
was derived from the configuration, so a reader can redo the arithmetic; objectives (the
user's thresholds) are judged on the same measurement. Each module registers its checks in
``CHECKS`` (``lab.checks.registry``) under the one name scenario files and results use:

- ``ejection``, ``readmission``: NGINX's passive health checks taking a failed backend out and
  back in; ``distribution``: each backend's share; ``latency``: p50/p99 in and out of faults;
- ``availability``, ``durability``: the ok ratio, and acknowledged writes surviving;
- ``lock-exclusivity``, ``fencing``, ``lock-takeover``, ``jobs-paused``, ``lock-holders``,
  ``lock-after-store-restart``, ``lock-after-eviction``: the scheduled jobs' Redis locks;
- ``rate-limit``, ``rate-limit-headers``: NGINX's limit_req, on NGINX's own timestamps;
- ``pool-bound``: PgBouncer's server connections; ``fail-fast``, ``recovery``: dependency outages;
- ``tls``, ``security-headers``, ``exposure``: the edge;
- ``health-contract``, ``health-startup``, ``health-drain``, ``health-detailed-timing``: the
  backends' health endpoints.

Every module of this package is imported here (``lab.registry.discover``), so a new check is
one new file: its judge, its objective hooks, its timeline marker, registered at import. A
module that only measures for checks (``upstream_replay``, ``limit_req_model``,
``limit_req_replay``, ``lock_spans``, ``outcomes``) is imported too and registers nothing; the
registration order (the reference's order) is the modules' sorted names.
"""

from lab.checks.base import CheckResult, Verdict, combine
from lab.checks.registry import CHECKS, CheckContext, CheckDef, Observation, run_check
from lab.registry import discover

discover(__name__, __path__)

# Names other packages and the tests import from here (after discovery: they are its modules').
from lab.checks.availability import check_availability, check_durability
from lab.checks.distribution import check_distribution
from lab.checks.ejection import check_ejection
from lab.checks.latency import check_latency
from lab.checks.readmission import check_readmission
from lab.expectations import FailureMode, failed_attempt_cost
from lab.history import ready_mark
from lab.topology.access_log import upstream_attempts

__all__ = [
    "CHECKS",
    "CheckContext",
    "CheckDef",
    "CheckResult",
    "FailureMode",
    "Observation",
    "Verdict",
    "check_availability",
    "check_distribution",
    "check_durability",
    "check_ejection",
    "check_latency",
    "check_readmission",
    "combine",
    "failed_attempt_cost",
    "ready_mark",
    "run_check",
    "upstream_attempts",
]
