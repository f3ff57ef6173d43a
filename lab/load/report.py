"""A load run's figures, its ``result.json`` and its end-of-run lines.

``result.json`` (``kind: "load"``, schema 1, fields only added) sits in the run's directory
beside k6's own files: ``script.js`` (the script the lab wrote), ``summary.json`` (k6's
``--summary-export``), ``dashboard.html`` (k6's web dashboard export; k6 skips it for runs
too short to chart) and ``k6.log``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.text import Text

from lab import __version__
from lab.history import Outcome
from lab.load.observe import NodeLoad, first_saturated, node_loads, pool_waiting_since
from lab.load.results import BreakPoint, Window, find_break, windows
from lab.load.runner import LoadResult
from lab.stats import nearest_rank_or_none

SCHEMA = 1


@dataclass(frozen=True)
class Latencies:
    """p50 / p95 / p99 of one clock, in seconds (None where nothing was measured)."""

    p50_s: float | None
    p95_s: float | None
    p99_s: float | None

    @classmethod
    def of(cls, values: list[float]) -> Latencies:
        return cls(*(nearest_rank_or_none(values, q) for q in (0.5, 0.95, 0.99)))

    def text(self) -> str:
        def ms(value: float | None) -> str:
            if value is None:
                return "-"
            return "none" if math.isinf(value) else f"{value * 1000:.1f}"

        return f"p50 {ms(self.p50_s)} / p95 {ms(self.p95_s)} / p99 {ms(self.p99_s)} ms"


@dataclass(frozen=True)
class LoadFigures:
    """What a run measured, computed once for the table, the JSON and the comparison."""

    sent: int
    ok: int
    failed: int
    unknown: int
    dropped: int
    scheduled: float | None
    span_s: float  # first send to last send
    achieved_rate: float  # answers ok per second over the span
    statuses: dict[str, int]
    backends: dict[str, int]
    client: Latencies  # k6's latency (no answer counts as longer than any)
    nginx: Latencies  # NGINX's $request_time for the same requests
    upstream: Latencies  # the backends' time, per NGINX ($upstream_response_time)
    windows: tuple[Window, ...]
    breakpoint: BreakPoint
    nodes: tuple[NodeLoad, ...]
    first_saturated: str  # one sentence
    pool_waiting_at: float | None
    transactions_per_s: float | None
    generator_cpus: float | None


def figures(result: LoadResult) -> LoadFigures:
    """Every figure of a run, from its history alone."""
    records = result.history.requests
    t0 = result.t0
    tally = {o: sum(1 for r in records if r.outcome is o) for o in Outcome}
    sends = [r.sent_at for r in records]
    span = (max(sends) - min(sends)) if len(sends) > 1 else 0.0
    statuses: dict[str, int] = {}
    backends: dict[str, int] = {}
    for record in records:
        key = str(record.status) if record.status else (record.error or "no answer")[:60]
        statuses[key] = statuses.get(key, 0) + 1
        if record.backend:
            backends[record.backend] = backends.get(record.backend, 0) + 1
    client = Latencies.of([r.latency_s if r.latency_s is not None else math.inf for r in records])
    log = result.history.access_log
    nginx = Latencies.of([e.request_time_s for e in log])
    upstream = Latencies.of(
        [sum(t for t in e.upstream_times_s if t is not None) for e in log if e.upstream_times_s]
    )
    wins = tuple(windows(records, [(d.at, d.client) for d in result.dropped], t0, result.plan))
    bounds = result.thresholds
    breakpoint = find_break(wins, bounds.p95_s, bounds.error_rate)
    loads = tuple(
        node_loads(
            result.containers, result.quotas, result.cores, result.started_at, result.finished_at
        )
    )
    first = first_saturated(loads)
    waiting = pool_waiting_since(result.history.pool_samples)
    if first is not None and first.first_saturated_at is not None:
        at = first.first_saturated_at - t0
        rate = f", schedule {result.plan.rate_at(at):.0f}/s" if result.plan is not None else ""
        quota = f"{first.quota_cpus:g} CPU quota" if first.quota_cpus else "the machine's cores"
        sentence = f"{first.node} at {at:.1f} s{rate}: {first.peak_cpus:.2f} cores of its {quota}"
    elif breakpoint.found:
        # Latency without a node at its quota is time spent waiting for the machine's CPU.
        sentence = ("no node reached 90% of its CPU quota: the break is the machine's (other "
                    "processes' load), not the topology's")
    else:
        sentence = "no node reached 90% of its CPU quota"
    if waiting is not None:
        sentence += (
            f"; PgBouncer had clients waiting for a server connection from {waiting - t0:.1f} s"
        )
    stats = result.history.pool_stats
    tps = None
    if len(stats) >= 2 and stats[-1].at > stats[0].at:
        tps = (stats[-1].total_xact_count - stats[0].total_xact_count) / (
            stats[-1].at - stats[0].at
        )
    generator = next((n.mean_cpus for n in loads if n.node == "k6"), None)
    scheduled = result.plan.scheduled() if result.plan is not None else None
    return LoadFigures(
        sent=len(records),
        ok=tally[Outcome.OK],
        failed=tally[Outcome.FAIL],
        unknown=tally[Outcome.UNKNOWN],
        dropped=len(result.dropped),
        scheduled=scheduled,
        span_s=span,
        achieved_rate=tally[Outcome.OK] / span if span else 0.0,
        statuses=dict(sorted(statuses.items())),
        backends=dict(sorted(backends.items())),
        client=client,
        nginx=nginx,
        upstream=upstream,
        windows=wins,
        breakpoint=breakpoint,
        nodes=loads,
        first_saturated=sentence,
        pool_waiting_at=waiting,
        transactions_per_s=tps,
        generator_cpus=generator,
    )


def document(result: LoadResult, figs: LoadFigures | None = None) -> dict[str, Any]:
    """The JSON form of one load run."""
    figs = figs or figures(result)
    plan = result.plan
    return {
        "schema": SCHEMA,
        "kind": "load",
        "profile": result.name,
        "lab": result.lab,
        "lab_version": __version__,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "wall_time_s": round(result.finished_at - result.started_at, 3),
        "verdict": result.verdict.verdict.value,
        "reason": result.verdict.reason,
        "k6": {
            "version": result.k6_version,
            "exit_code": result.k6_exit_code,
            "generator": result.generator,
            "target": asdict(result.target),
            "script": str(result.script) if result.script else "script.js",
        },
        "plan": None
        if plan is None
        else {
            "schedule": plan.describe(),
            "start_rate": plan.start_rate,
            "stages": [asdict(s) for s in plan.stages],
            "kinds": [asdict(k) for k in plan.kinds],
            "params": plan.params,
            "scheduled": plan.scheduled(),
            "vus": {k.name: plan.vus_for(k) for k in plan.kinds},
        },
        "thresholds": result.thresholds.model_dump(),
        "threshold_results": [asdict(t) for t in result.threshold_results],
        "quotas": result.quotas,
        "figures": {
            "sent": figs.sent,
            "ok": figs.ok,
            "failed": figs.failed,
            "unknown": figs.unknown,
            "dropped": figs.dropped,
            "scheduled": figs.scheduled,
            "span_s": figs.span_s,
            "achieved_rate": figs.achieved_rate,
            "statuses": figs.statuses,
            "backends": figs.backends,
            "latency": {
                "client": asdict(figs.client),
                "nginx": asdict(figs.nginx),
                "upstream": asdict(figs.upstream),
            },
            "breakpoint": asdict(figs.breakpoint),
            "first_saturated": figs.first_saturated,
            "pgbouncer_transactions_per_s": figs.transactions_per_s,
            "generator_cpus": figs.generator_cpus,
            "nodes": [asdict(n) | {"memory_growth": n.memory_growth} for n in figs.nodes],
            "windows": [asdict(w) for w in figs.windows],
        },
        "notes": list(result.notes),
        "load_average": list(result.load_average),
        "k6_metrics": result.k6_metrics,
        "history": asdict(result.history),
        "dropped": [asdict(d) for d in result.dropped],
        "containers": [asdict(s) for s in result.containers],
    }


def write(result: LoadResult, figs: LoadFigures | None = None) -> Path:
    """``result.json`` in the run's directory; returns its path."""
    path = result.directory / "result.json"
    # inf (no answer) is not JSON: such a latency is written as null.
    text = json.dumps(document(result, figs), indent=1, default=str)
    path.write_text(text.replace("Infinity", "null"))
    return path


STYLE = {"pass": "green", "fail": "red", "unknown": "yellow"}


def _mib(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"


def lines(result: LoadResult, figs: LoadFigures | None = None) -> list[Text]:
    """The end-of-run lines: verdict, rate, latency on each clock, saturation, per node."""
    figs = figs or figures(result)
    verdict = result.verdict.verdict.value
    out = [
        Text.assemble(
            (f"{result.name}: ", "bold"), (verdict, STYLE[verdict]), f" ({result.verdict.reason})"
        )
    ]
    if result.plan is not None:
        out.append(
            Text(f"  schedule   {result.plan.describe()}  ({figs.scheduled:.0f} iterations)")
        )
    generator = (
        f", its CPU {figs.generator_cpus:.2f} cores" if figs.generator_cpus is not None else ""
    )
    out.append(
        Text(
            f"  generator  k6 {result.k6_version} on the {result.generator}"
            f" -> {result.target.node}:{result.target.port}{generator}"
        )
    )
    out.append(
        Text(
            f"  requests   {figs.sent} sent, {figs.ok} ok, {figs.failed} failed, "
            f"{figs.unknown} unknown, {figs.dropped} dropped; "
            f"{figs.achieved_rate:.0f} ok/s over {figs.span_s:.1f} s"
        )
    )
    out.append(Text(f"  statuses   {', '.join(f'{k}: {v}' for k, v in figs.statuses.items())}"))
    if figs.backends:
        out.append(Text(f"  backends   {', '.join(f'{k}: {v}' for k, v in figs.backends.items())}"))
    out.append(Text(f"  latency    client {figs.client.text()}"))
    out.append(Text(f"             NGINX  {figs.nginx.text()}"))
    out.append(Text(f"             backend {figs.upstream.text()}"))
    for threshold in result.threshold_results:
        mark = ("held", "green") if threshold.passed else ("failed", "red")
        value = f" (was {threshold.value:g})" if threshold.value is not None else ""
        out.append(
            Text.assemble(f"  threshold  {threshold.metric} {threshold.expression}{value} ", mark)
        )
    if figs.breakpoint.found or result.name == "breakpoint":
        out.append(
            Text(
                f"  break      {figs.breakpoint.reason}; sustained "
                f"{figs.breakpoint.sustained_rate:.0f} ok/s before it"
            )
        )
    out.append(Text(f"  saturated  first: {figs.first_saturated}"))
    before, after = result.load_average
    out.append(
        Text(
            f"  host       load average {before:.2f} at the start, {after:.2f} at the end"
            f" ({result.cores} cores)"
        )
    )
    if figs.transactions_per_s is not None:
        out.append(Text(f"  pgbouncer  {figs.transactions_per_s:.0f} transactions/s"))
    for node in figs.nodes:
        quota = f"/{node.quota_cpus:g}" if node.quota_cpus else ""
        out.append(
            Text(
                f"    {node.node:10} cpu mean {node.mean_cpus:.2f} peak {node.peak_cpus:.2f}"
                f"{quota}  throttled {node.throttled_share:.0%}  memory "
                f"{_mib(node.memory_start)} -> {_mib(node.memory_end)}"
                f" ({node.memory_growth / 2**20:+.1f} MiB)"
            )
        )
    for note in result.notes:
        out.append(Text(f"  note: {note}"))
    return out
