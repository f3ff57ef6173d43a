"""The checklist's "1.5-3x improvement in throughput", measured: one profile against the
checklist's before and after, each on a fresh lab of its own, one after the other.

- **before**: one backend straight on PostgreSQL. The lab's own topology with one replica and
  the backend's database URL pointing at PostgreSQL instead of PgBouncer
  (``lab.topology.plan``'s ``extra_env``); the generator sends to the backend itself. NGINX
  and PgBouncer still run, idle, outside the request path.
- **after**: the default topology, three backends behind NGINX and PgBouncer.

Every backend is held to the same CPU quota (``[load] cpus.backend``), so three backends have
three times the compute of one even on one machine; NGINX, PgBouncer and PostgreSQL get their
own quotas in both. Throughput "at the objectives" is the most ok answers per second of any
window before the first window that missed a bound (``results.find_break``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from lab.config import LabConfig
from lab.engine import Engine
from lab.load.placement import BACKEND_DIRECT, Target
from lab.load.report import Latencies, LoadFigures, figures
from lab.load.runner import LoadResult
from lab.topology.lab import Lab
from lab.topology.render import LabSecrets

CLAIM = (1.5, 3.0)
EQUAL_LOAD_SHARE = 0.8  # of the lower sustained rate
EQUAL_LOAD_BAND = 0.15  # windows within this of it count


def before_lab(
    engine: Engine,
    config: LabConfig,
    name: str,
    *,
    publish_backend: bool = False,
) -> Lab:
    """The checklist's "before": one backend, its database URL straight to PostgreSQL."""
    one = config.with_name(name).with_overrides("backend", replicas=1)
    secrets = LabSecrets.generate()
    pg = one.postgres
    direct = f"postgresql://{pg.user}:{secrets.db_password}@postgres:5432/{pg.database}"
    return Lab(
        engine,
        one,
        secrets,
        extra_env={"backend-1": {"LAB_DATABASE_URL": direct}},
        extra_publish={"backend-1": {f"{BACKEND_DIRECT.port}/tcp": 0}} if publish_backend else None,
    )


def after_lab(engine: Engine, config: LabConfig, name: str) -> Lab:
    """The checklist's "after": the lab's own topology (three backends by default)."""
    return Lab(engine, config.with_name(name))


@dataclass(frozen=True)
class Side:
    """One topology's run and its figures."""

    label: str
    result: LoadResult
    figures: LoadFigures

    @property
    def throughput(self) -> float:
        return self.figures.breakpoint.sustained_rate


@dataclass(frozen=True)
class Comparison:
    """Both sides, their ratio, and the latency of each at one load both carried."""

    before: Side
    after: Side
    equal_load: float
    before_at_equal: Latencies
    after_at_equal: Latencies

    @property
    def ratio(self) -> float | None:
        return self.after.throughput / self.before.throughput if self.before.throughput else None

    def verdict_line(self) -> str:
        """The ratio against the claim; a side that never missed a bound only gives a bound."""
        ratio = self.ratio
        if ratio is None:
            return "ratio: the before side sustained nothing"
        low, high = CLAIM
        where = "within" if low <= ratio <= high else "below" if ratio < low else "above"
        line = f"ratio {ratio:.2f}x, {where} the claimed {low:g}-{high:g}x"
        unbroken = [s.label for s in (self.before, self.after) if not s.figures.breakpoint.found]
        if unbroken:
            line += (
                f" (the {' and '.join(unbroken)} side never missed a bound: its figure is "
                "what it was offered, a lower bound; raise the peak)"
            )
        return line


def latency_near(result: LoadResult, figs: LoadFigures, rate: float) -> Latencies:
    """Client latency of the requests sent in windows whose rate was within the band of ``rate``."""
    low, high = rate * (1 - EQUAL_LOAD_BAND), rate * (1 + EQUAL_LOAD_BAND)
    chosen = [(w.start, w.start + w.width) for w in figs.windows if low <= w.rate <= high]
    t0 = result.t0
    values = [
        r.latency_s if r.latency_s is not None else math.inf
        for r in result.history.requests
        if any(a <= r.sent_at - t0 < b for a, b in chosen)
    ]
    return Latencies.of(values)


def compare(before: LoadResult, after: LoadResult) -> Comparison:
    """Figures of both runs, and the latency of each at 80% of the lower sustained rate."""
    b = Side("before", before, figures(before))
    a = Side("after", after, figures(after))
    equal = EQUAL_LOAD_SHARE * min(b.throughput, a.throughput)
    return Comparison(
        b, a, equal, latency_near(before, b.figures, equal), latency_near(after, a.figures, equal)
    )


def run_both(
    engine: Engine,
    config: LabConfig,
    run: Callable[[Lab, Target, str], LoadResult],
    say: Callable[[str], None],
    *,
    publish_backend: bool = False,
) -> Comparison:
    """Start the before lab, load it, remove it; then the same for the after lab."""
    base = config.name[:24]
    results = []
    for label, lab, target in (
        (
            "before",
            before_lab(engine, config, f"{base}-before", publish_backend=publish_backend),
            BACKEND_DIRECT,
        ),
        ("after", after_lab(engine, config, f"{base}-after"), Target()),
    ):
        say(f"starting the {label} topology (lab {lab.name})")
        try:
            lab.up(ephemeral=True, say=say)
            results.append(run(lab, target, label))
        finally:
            lab.down()
    return compare(results[0], results[1])
