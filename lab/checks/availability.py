"""Availability: the share of requests that succeeded, and whether acknowledged writes survived.

An ``unknown`` outcome (timeout) is not a success: the client did not get its answer. For
writes the reverse holds: a write the client saw acknowledged must be stored, whatever else
happened; an unacknowledged one may or may not be.
"""

from __future__ import annotations

import math

from lab.checks.base import CheckResult, Verdict, combine, never_crashes
from lab.history import History, Outcome

NAME = "availability"
DURABILITY = "durability"
# Keeps 1000 * (1 - 0.999) = 1.0000000000000009 from flooring the wrong way.
_EPS = 1e-9


@never_crashes(NAME)
def check_availability(history: History, slo: float = 0.999,
                       window: tuple[float, float] | None = None,
                       acknowledged_write_ids: frozenset[str] | None = None,
                       stored_write_ids: frozenset[str] | None = None) -> CheckResult:
    """Whether ok/total meets the SLO and every acknowledged write is stored."""
    requests = [r for r in history.requests
                if window is None or window[0] <= r.sent_at < window[1]]
    total = len(requests)
    ok = sum(r.outcome is Outcome.OK for r in requests)
    failed = sum(r.outcome is Outcome.FAIL for r in requests)
    unknown = total - ok - failed
    allowed = math.floor(total * (1 - slo) + _EPS)
    derivation = (f"SLO {slo:g} over {total} requests allows floor({total} * (1 - {slo:g})) = "
                  f"{allowed} non-ok (fail + unknown)")
    expected = f"success ratio >= {slo:g}"
    values: list[tuple[str, float]] = [("total", float(total)), ("ok", float(ok)),
                                       ("failed", float(failed)), ("unknown", float(unknown))]
    details: list[str] = []
    verdicts: list[Verdict] = []
    if total == 0:
        measured = "no requests"
        verdicts.append(Verdict.UNKNOWN)
    else:
        ratio = ok / total
        values.append(("ratio", ratio))
        measured = f"{ok}/{total} ok = {ratio:.5f} ({failed} fail, {unknown} unknown)"
        verdicts.append(Verdict.PASS if total - ok <= allowed else Verdict.FAIL)
    if acknowledged_write_ids is not None or stored_write_ids is not None:
        writes = check_durability(acknowledged_write_ids, stored_write_ids)
        expected += f"; {writes.expected}"
        measured += f"; {writes.measured}"
        values += list(writes.values)
        details += list(writes.details)
        verdicts.append(writes.verdict)
    return CheckResult(NAME, combine(verdicts), measured, expected, derivation, tuple(details),
                       tuple(values))


@never_crashes(DURABILITY)
def check_durability(acknowledged_write_ids: frozenset[str] | None,
                     stored_write_ids: frozenset[str] | None) -> CheckResult:
    """Whether every write the client saw acknowledged is stored (unacknowledged ones may be)."""
    expected = "every acknowledged write stored"
    derivation = ("a write answered 201 was committed before the answer; it must be in "
                  "PostgreSQL afterwards, whatever failed in between")
    if acknowledged_write_ids is None or stored_write_ids is None:
        return CheckResult(DURABILITY, Verdict.UNKNOWN, "write check needs both acknowledged and stored ids",
                           expected, derivation)
    if not acknowledged_write_ids:
        return CheckResult(DURABILITY, Verdict.UNKNOWN, "no write was acknowledged", expected, derivation)
    missing = sorted(acknowledged_write_ids - stored_write_ids)
    values = (("acknowledged_writes", float(len(acknowledged_write_ids))),
              ("lost_writes", float(len(missing))))
    measured = f"{len(missing)} of {len(acknowledged_write_ids)} acknowledged writes lost"
    details: tuple[str, ...] = ()
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        details = (f"lost acknowledged writes: {shown}",)
    return CheckResult(DURABILITY, Verdict.FAIL if missing else Verdict.PASS, measured, expected,
                       derivation, details, values)
