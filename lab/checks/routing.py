"""Routing: every decision NGINX logged during a run follows the configuration it runs.

The same replay as the ejection check (``upstream_replay``), over the whole run and every
server of the backend pool rather than one target's fault: no try routed to a server its
failure counters skip, no server skipped when the balancer's turn was its own, no retry the
configuration forbids and none missing that it makes, no timeout other than the configured
one. It has no objective: it judges conformance only, which is what a scenario of brief
faults (a rolling restart) needs, where no ejection window is long enough to measure.
"""

from __future__ import annotations

from collections import Counter

from lab.checks.base import CheckResult, Verdict
from lab.checks.ejection import pool_replay, violation_lines
from lab.checks.registry import CheckDef, NoParams, register
from lab.expectations import Expectations
from lab.history import History

NAME = "routing"


def expected_text(expectations: Expectations) -> str:
    """What the configuration says about every routing decision, in one sentence."""
    policy = expectations.upstream
    return (f"every try of upstream {policy.name} routed as its counters (max_fails "
            f"{policy.max_fails}, fail_timeout {policy.fail_timeout_s:g} s) and "
            f"{policy.balancing} allow, retried as proxy_next_upstream "
            f"{' '.join(policy.next_upstream) or 'off'} allows, timed out as configured")


def check_routing(history: History, expectations: Expectations) -> CheckResult:
    """Whether every routing decision in NGINX's log follows the configuration it runs."""
    expected = expected_text(expectations)
    r = pool_replay(history, expectations)
    if not r.judged:
        return CheckResult(NAME, Verdict.UNKNOWN, "no request reached the pool in NGINX's log",
                           expected, "nothing to replay")
    kinds = Counter(v.kind.value for v in r.violations)
    origin = min((e.started_at for e in history.access_log), default=0.0)
    measured = (f"{r.judged} routing decisions replayed, {len(r.violations)} against the "
                f"configuration" + (f" ({', '.join(f'{n} {k}' for k, n in kinds.items())})"
                                    if kinds else "")
                + f"; {r.ambiguous} left open by the log's millisecond timing")
    derivation = (f"NGINX's counters replayed from its access log "
                  f"({'shared (zone)' if r.policy.shared_counters else 'per worker process'}); "
                  f"balancer: {r.balancer_note}; docs/semantics.md §1")
    values = (("decisions", float(r.judged)), ("violations", float(len(r.violations))),
              ("ambiguous", float(r.ambiguous)),
              ("balancer_judged", 1.0 if r.balancer_judged else 0.0))
    return CheckResult(NAME, Verdict.FAIL if r.violations else Verdict.PASS, measured, expected,
                       derivation, violation_lines(r.violations, origin), values)


register(CheckDef(
    name=NAME, params=NoParams, client_filter=False,
    judge=lambda ctx, params: check_routing(ctx.history, ctx.expectations),
    describe=lambda ctx, params: expected_text(ctx.expectations),
    summary="every routing decision NGINX logged follows the configuration it runs: failure "
            "counters, the balancer's turns, retries, timeouts (the access log replayed)"))
