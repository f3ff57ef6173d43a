"""k6's results read back into the lab's typed history, and the run's verdict.

k6 writes one CSV row per metric sample (``--out csv``, microsecond timestamps). The lab keeps:

- ``http_req_duration`` rows: one per answer (or error), with its status and scenario. The
  lab's own scripts (``lab.load.script``) add the iteration number and the scenario's start
  as metadata, so the intended send time follows from the schedule (``LoadPlan.time_of``),
  and the request id they sent, by which the runner joins NGINX's access log for the serving
  backend. A user's own script gives the same record without them: the intended time is the
  sent time (k6 does not say when an iteration of an arbitrary script was due);
- ``dropped_iterations`` rows: iterations k6 could not start on time (no free VU).

An HTTP sample's timestamp is when the answer ended; it was sent ``metric_value`` ms earlier.
Outcomes follow ``lab.history``: a status below 400 is ok, 400 and above fail; without a
status, an error before anything was sent (DNS, dial, bad URL) fails, anything else (a
timeout, a reset) is unknown.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.history import Outcome, RequestRecord
from lab.load.profiles import LoadPlan
from lab.stats import nearest_rank_or_none
from lab.verdict import Verdict

DURATION_METRIC = "http_req_duration"
DROPPED_METRIC = "dropped_iterations"
# k6 error codes for requests that never left (docs: k6 error codes): bad URL, DNS, dial, and
# 1300-1399 TLS (the handshake precedes the request).
_NOT_SENT = (range(1020, 1021), range(1100, 1200), range(1210, 1214), range(1300, 1400))
# k6's exit codes (errext/exitcodes): thresholds failed, and what "aborted" means.
K6_OK, K6_THRESHOLDS_FAILED = 0, 99
K6_EXIT_CODES = {
    99: "a threshold failed",
    100: "setup() timed out",
    101: "teardown() timed out",
    102: "timed out",
    103: "k6 engine error",
    104: "invalid configuration",
    105: "aborted from outside",
    107: "the script threw an exception",
    108: "the script aborted the test",
    109: "k6 panicked",
    110: "the test was marked as failed",
}


def _pairs(text: str) -> dict[str, str]:
    """k6's ``extra_tags``/``metadata`` column: ``k=v&k2=v2``."""
    out: dict[str, str] = {}
    for item in text.split("&") if text else ():
        key, _, value = item.partition("=")
        out[key] = value
    return out


@dataclass(frozen=True)
class K6Row:
    """One CSV sample: metric, when (epoch s), value, tags and metadata."""

    metric: str
    at: float
    value: float
    tags: dict[str, str]
    metadata: dict[str, str]


class CsvTail:
    """Reads k6's CSV output as it grows: only complete lines, the header first."""

    def __init__(self, path: Path):
        self.path = path
        self._offset = 0
        self._partial = b""
        self._header: list[str] | None = None

    def read(self) -> list[K6Row]:
        """The rows written since the last call (none while the file does not exist)."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        return parse_rows(data[:end].decode(errors="replace"), self)

    @property
    def header(self) -> list[str] | None:
        return self._header


def parse_rows(text: str, state: CsvTail | None = None) -> list[K6Row]:
    """Complete CSV lines as rows; ``state`` carries the header between chunks."""
    rows: list[K6Row] = []
    header = state.header if state is not None else None
    for fields in csv.reader(io.StringIO(text)):
        if not fields:
            continue
        if header is None or fields[0] == "metric_name":
            header = fields
            if state is not None:
                state._header = fields
            continue
        values = dict(zip(header, fields))
        try:
            at = int(values["timestamp"]) / 1e6
            value = float(values["metric_value"])
        except (KeyError, ValueError):
            continue
        tags = {
            k: v
            for k, v in values.items()
            if k not in ("metric_name", "timestamp", "metric_value", "extra_tags", "metadata") and v
        }
        tags.update(_pairs(values.get("extra_tags", "")))
        rows.append(
            K6Row(values["metric_name"], at, value, tags, _pairs(values.get("metadata", "")))
        )
    return rows


def outcome_of(status: int, error_code: int) -> Outcome:
    """ok / fail / unknown for one answer (see the module docstring)."""
    if status:
        return Outcome.OK if status < 400 else Outcome.FAIL
    if any(error_code in codes for codes in _NOT_SENT):
        return Outcome.FAIL
    return Outcome.UNKNOWN


@dataclass
class Collected:
    """What the CSV said so far: records, dropped iterations, the first scenario start."""

    records: list[RequestRecord] = field(default_factory=list)
    dropped: list[tuple[float, str]] = field(default_factory=list)  # (at, scenario)
    started_at: float | None = None  # the scenario start k6 reported (epoch s)
    errors: int = 0  # records not ok, kept as they come for the live line


class RecordBuilder:
    """Turns CSV rows into ``RequestRecord``s; a plan gives intended times and paths."""

    def __init__(self, plan: LoadPlan | None):
        self.plan = plan
        self.kinds = {k.name: k for k in plan.kinds} if plan is not None else {}
        self.collected = Collected()

    def feed(self, rows: Iterable[K6Row]) -> None:
        for row in rows:
            if row.metric == DURATION_METRIC:
                record = self._record(row)
                self.collected.records.append(record)
                self.collected.errors += record.outcome is not Outcome.OK
            elif row.metric == DROPPED_METRIC:
                self.collected.dropped.append((row.at, row.tags.get("scenario", "")))

    def _intended(self, scenario: str, row: K6Row, sent_at: float) -> float:
        kind = self.kinds.get(scenario)
        iteration, start = row.metadata.get("i"), row.metadata.get("s")
        if self.plan is None or kind is None or iteration is None or start is None:
            return sent_at
        started = int(start) / 1000
        if self.collected.started_at is None or started < self.collected.started_at:
            self.collected.started_at = started
        offset = self.plan.time_of(int(iteration), kind)
        return sent_at if offset is None else started + offset

    def _record(self, row: K6Row) -> RequestRecord:
        tags = row.tags
        scenario = tags.get("scenario", "")
        status = int(tags.get("status") or 0)
        error_code = int(tags.get("error_code") or 0)
        latency = row.value / 1000
        sent_at = row.at - latency
        kind = self.kinds.get(scenario)
        if kind is not None:
            method, path = kind.method, kind.path
        else:
            method, path = tags.get("method", ""), tags.get("name", tags.get("url", ""))
        outcome = outcome_of(status, error_code)
        iteration = row.metadata.get("i")
        return RequestRecord(
            id=len(self.collected.records),
            client=scenario or "k6",
            method=method,
            path=path,
            intended_at=self._intended(scenario, row, sent_at),
            sent_at=sent_at,
            latency_s=latency if status else None,
            status=status or None,
            backend=None,  # from NGINX's access log, by request id (LoadRunner)
            outcome=outcome,
            error=(tags.get("error") or f"k6 error {error_code}") if error_code else None,
            request_id=f"{scenario}-{iteration}" if iteration is not None else None,
        )


# --- k6's end-of-test summary ----------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdResult:
    """One k6 threshold and whether it held (k6's own evaluation, at the end of the run)."""

    metric: str  # "http_req_duration{scenario:main}"
    expression: str  # "p(95)<200"
    passed: bool
    value: float | None  # the metric's value the expression reads, when the summary has it


def _value_for(expression: str, values: dict[str, Any]) -> float | None:
    name = expression.split("<")[0].split(">")[0].strip()
    value = values.get(name, values.get("value" if name == "rate" else name))
    return float(value) if isinstance(value, int | float) else None


def read_summary(path: Path) -> tuple[dict[str, Any], tuple[ThresholdResult, ...]]:
    """k6's ``--summary-export`` file: each metric's values, and every threshold's result.

    In that format a threshold maps to whether it *failed* (k6's legacy summary)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}, ()
    metrics = data.get("metrics") or {}
    results = []
    for name, values in metrics.items():
        for expression, failed in (values.get("thresholds") or {}).items():
            results.append(
                ThresholdResult(name, expression, not failed, _value_for(expression, values))
            )
    return metrics, tuple(results)


# --- per-window figures and the verdict -------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """The requests sent in one stretch of the run (``start`` seconds after the run began)."""

    start: float
    width: float
    target_rate: float  # what the schedule asked for (mid-window); 0 for a user's script
    sent: int
    ok: int
    failed: int
    unknown: int
    dropped: int
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None

    @property
    def rate(self) -> float:
        return self.sent / self.width

    @property
    def ok_rate(self) -> float:
        return self.ok / self.width

    @property
    def error_rate(self) -> float:
        return (self.failed + self.unknown) / self.sent if self.sent else 0.0


def windows(
    records: Sequence[RequestRecord],
    dropped: Sequence[tuple[float, str]],
    start: float,
    plan: LoadPlan | None,
    width: float = 1.0,
) -> list[Window]:
    """The run cut into windows of ``width`` seconds by send time."""
    if not records and not dropped:
        return []
    last = max([r.sent_at for r in records] + [d[0] for d in dropped])
    count = max(1, math.ceil((last - start) / width + 1e-9))
    buckets: list[list[RequestRecord]] = [[] for _ in range(count)]
    drops = [0] * count
    for record in records:
        index = min(count - 1, max(0, int((record.sent_at - start) // width)))
        buckets[index].append(record)
    for at, _ in dropped:
        drops[min(count - 1, max(0, int((at - start) // width)))] += 1
    out = []
    for index, bucket in enumerate(buckets):
        tally = Counter(r.outcome for r in bucket)
        latencies = [r.latency_s if r.latency_s is not None else math.inf for r in bucket]
        mid = (index + 0.5) * width
        out.append(
            Window(
                start=index * width,
                width=width,
                target_rate=plan.rate_at(mid) if plan is not None else 0.0,
                sent=len(bucket),
                ok=tally[Outcome.OK],
                failed=tally[Outcome.FAIL],
                unknown=tally[Outcome.UNKNOWN],
                dropped=drops[index],
                p50_s=nearest_rank_or_none(latencies, 0.50),
                p95_s=nearest_rank_or_none(latencies, 0.95),
                p99_s=nearest_rank_or_none(latencies, 0.99),
            )
        )
    return out


@dataclass(frozen=True)
class BreakPoint:
    """Where a ramp stopped meeting its bounds, read from the lab's own windows.

    k6's thresholds see everything since the start, so on a ramp they break late; the windows
    say when the requests of one stretch stopped meeting the bound."""

    found: bool
    at_s: float | None  # start of the first window that missed a bound
    target_rate: float | None  # what the schedule asked for there
    sustained_rate: float  # the most ok answers/s of a window before it that met every bound
    reason: str


def _misses(window: Window, p95_s: float | None, error_rate: float | None) -> list[str]:
    reasons = []
    if window.dropped:
        reasons.append(f"k6 dropped {window.dropped} iterations")
    if p95_s is not None and window.p95_s is not None and window.p95_s >= p95_s:
        reasons.append(f"p95 {window.p95_s * 1000:.1f} ms >= {p95_s * 1000:g} ms")
    if error_rate is not None and window.error_rate >= error_rate:
        reasons.append(f"errors {window.error_rate:.1%} >= {error_rate:.1%}")
    return reasons


def find_break(
    wins: Sequence[Window],
    p95_s: float | None,
    error_rate: float | None,
    *,
    min_sent: int = 20,
    persist: int = 2,
) -> BreakPoint:
    """The first of ``persist`` consecutive windows (each with at least ``min_sent`` requests,
    or drops) that missed a bound: one slow second at the start (k6 opening its connections)
    or a neighbour's burst on a shared machine is not where the system broke."""
    counted = [w for w in wins if w.sent >= min_sent or w.dropped]
    best = 0.0
    for index, window in enumerate(counted):
        reasons = _misses(window, p95_s, error_rate)
        following = counted[index + 1 : index + persist]
        if reasons and all(_misses(w, p95_s, error_rate) for w in following):
            return BreakPoint(
                True,
                window.start,
                window.target_rate,
                best,
                f"at {window.start:.0f}-{window.start + window.width:.0f} s "
                f"(schedule {window.target_rate:.0f}/s, sent {window.rate:.0f}/s): "
                + "; ".join(reasons),
            )
        if not reasons:
            best = max(best, window.ok_rate)
    return BreakPoint(False, None, None, best, "every window met its bounds")


@dataclass(frozen=True)
class LoadVerdict:
    """The run's verdict and the sentence that explains it."""

    verdict: Verdict
    reason: str


def judge_records(
    records: Sequence[RequestRecord],
    p95_s: float | None,
    error_rate: float | None,
) -> tuple[ThresholdResult, ...]:
    """The objectives in force judged on the recorded requests themselves, per request kind
    (k6 scenario): p95 latency (a request with no answer counts as slower than any) and the
    share not ok. A user's script is judged this way whatever thresholds it sets itself."""
    kinds: dict[str, list[RequestRecord]] = {}
    for record in records:
        kinds.setdefault(record.client, []).append(record)
    out: list[ThresholdResult] = []
    for kind, group in sorted(kinds.items()):
        if p95_s is not None:
            latencies = [r.latency_s if r.latency_s is not None else math.inf for r in group]
            p95 = nearest_rank_or_none(latencies, 0.95)
            out.append(ThresholdResult(f"lab: latency{{scenario:{kind}}}",
                                       f"p(95)<{p95_s * 1000:g}",
                                       p95 is not None and p95 < p95_s,
                                       None if p95 is None else p95 * 1000))
        if error_rate is not None:
            rate = sum(r.outcome is not Outcome.OK for r in group) / len(group)
            out.append(ThresholdResult(f"lab: not ok{{scenario:{kind}}}",
                                       f"rate<{error_rate:g}", rate < error_rate, rate))
    return tuple(out)


def verdict_of(
    exit_code: int,
    thresholds: Sequence[ThresholdResult],
    dropped: int,
    scheduled: float | None,
    sent: int,
    max_dropped: float,
) -> LoadVerdict:
    """k6's exit code and thresholds, and whether the generator kept its schedule.

    What was sent is judged first: a threshold that failed on the requests sent fails the run,
    however many iterations k6 dropped (the system was too slow or too wrong for the load it
    did get). A run that passes on what it sent but dropped more than ``max_dropped`` of its
    schedule is unknown: the requests that would have shown the system's behaviour at the
    rate asked were never sent."""
    failed = [t for t in thresholds if not t.passed]
    failed_text = "; ".join(
        f"{t.metric} {t.expression}" + (f" (was {t.value:g})" if t.value is not None else "")
        for t in failed
    )
    asked = scheduled if scheduled else dropped + sent
    share = dropped / asked if asked else 0.0
    drops = (
        f"; k6 also dropped {dropped} of {asked:.0f} iterations ({share:.2%})" if dropped else ""
    )
    if exit_code == K6_THRESHOLDS_FAILED or failed:
        return LoadVerdict(
            Verdict.FAIL, f"thresholds failed: {failed_text or 'see k6 output'}{drops}"
        )
    if dropped and share > max_dropped:
        return LoadVerdict(
            Verdict.UNKNOWN,
            f"the generator could not keep the schedule: k6 dropped {dropped} of "
            f"{asked:.0f} iterations ({share:.2%}; no free VU at their time), so the system "
            "was not loaded as asked; what was sent met every threshold",
        )
    if exit_code != K6_OK:
        return LoadVerdict(
            Verdict.UNKNOWN,
            f"k6 exited {exit_code}: {K6_EXIT_CODES.get(exit_code, 'unknown exit code')}",
        )
    if sent == 0:
        return LoadVerdict(Verdict.UNKNOWN, "no request was recorded")
    if not thresholds:
        # Nothing judged the requests: a run is not a pass for having been run.
        return LoadVerdict(Verdict.UNKNOWN, "no threshold judged the requests")
    return LoadVerdict(
        Verdict.PASS,
        f"{len(thresholds)} thresholds held"
        + (
            f"; {dropped} iterations dropped, within the {max_dropped:.2%} allowed"
            if dropped
            else ""
        ),
    )
