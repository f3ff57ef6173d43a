"""Run results for the report's unit tests: simulated failover histories with real check
results, written by lab.report exactly as `lab run` writes them."""

from __future__ import annotations

import json
from pathlib import Path

from nginx_sim import Nginx, expectations, failover
from synthetic_history import T0, request

from lab import report
from lab.checks import CheckResult, Verdict, check_ejection, check_readmission
from lab.history import (
    FencingRejection,
    HealthSample,
    History,
    JobRun,
    Mark,
    Outcome,
    PoolSample,
)
from lab.scenarios.runner import RunResult
from lab.verdict import ObjectiveResult, Prediction

TARGET = "backend-2"
# Fields result.json gained with the objectives layer; documents written before lack them.
NEWER_FIELDS = ("verdicts", "objectives", "predictions", "steps", "config", "lab_version",
                "expectations")
NEWER_CHECK_FIELDS = ("conformance", "label", "objectives")


def failover_result(rate: float = 20.0, duration_s: float = 20.0, *,
                    unknown_check: bool = False) -> RunResult:
    """A simulated failover of TARGET judged by the real ejection and readmission checks,
    an availability check that fails and (optionally) one that could not decide."""
    history = failover(TARGET, 7, rate_per_s=rate, duration_s=duration_s)
    history.marks.insert(0, Mark("start", T0 - 0.5))
    # What the simulation (retrying NGINX) never gives: answers that failed, and none at all.
    first = len(history.requests)
    # After the heal, so that the ejection check (client errors during the fault) still passes.
    history.requests += [request(first + i, 15 + i, outcome=Outcome.FAIL, status=502,
                                 backend=None) for i in range(3)]
    history.requests += [request(first + 3 + i, 18 + i, outcome=Outcome.UNKNOWN)
                         for i in range(2)]
    expected = expectations(Nginx(fail_timeout_s=4).policy())
    ejection = check_ejection(history, expected, TARGET)
    readmission = check_readmission(history, expected, TARGET)
    lost = ObjectiveResult("availability", Verdict.FAIL, ">= 0.9999", "0.99000 of 400", 0.99,
                           "ok answers / requests sent")
    checks = [
        CheckResult(ejection.name, ejection.verdict, ejection.measured, ejection.expected,
                    ejection.derivation, ejection.details, ejection.values,
                    (ObjectiveResult("ejection", Verdict.PASS, "<= 50 s", "1.2 s", 1.2,
                                     "last attempt routed after the fault"),)),
        readmission,
        CheckResult("availability", Verdict.FAIL, "396/400 ok", "success ratio >= 0.999",
                    "SLO 0.999 over 400 requests allows 0 non-ok", objectives=(lost,)),
    ]
    if unknown_check:
        checks.append(CheckResult("distribution", Verdict.UNKNOWN, "12 requests",
                                  "at least 100000 requests", "min_requests"))
    prediction = Prediction("ejection", "ejection", "<= 50 s", "out of rotation within 1.45 s",
                            True, "c + max_fails * g = 1 + 3 * 0.150 = 1.450 s")
    return RunResult(scenario="failover", description="Kill a backend.\n\nThen restart it.",
                     lab="unit", seed=7, started_at=T0 - 0.5, finished_at=T0 + duration_s,
                     verdict=Verdict.FAIL, checks=tuple(checks), history=history, faults=(),
                     durations=(("fail_timeout", 4.0), ("rate", rate)),
                     predictions=(prediction,),
                     steps=("wait 2 s", f"inject kill on {TARGET}", f"heal kill on {TARGET}"),
                     config={"name": "unit", "pgbouncer": {"default_pool_size": 30}})


def with_locks_pool_and_health(history: History) -> History:
    """The history with two overlapping job runs, a fencing refusal, pool samples and a
    health watcher's samples added."""
    history.job_runs += [
        JobRun(1, "recurring-messages", "backend-1", 10, 1, T0 + 1, T0 + 6, "ok"),
        JobRun(2, "recurring-messages", "backend-3", 11, 2, T0 + 4, None, "running"),
    ]
    history.fencing_rejections.append(FencingRejection("recurring-messages", "backend-1", 10, 11,
                                                       T0 + 5.5))
    history.pool_samples += [PoolSample(T0 + t, 5, w, 30, 0, 0, 0, 0, 0.1, "app", "app")
                             for t, w in ((1, 0), (2, 40), (3, 0))]
    history.health_samples += [HealthSample(T0 + t / 10, "backend-2", "/health/ready",
                                            200 if t < 30 else 503, "ok", "watched")
                               for t in range(60)]
    return history


def write(result: RunResult, root: Path, *, older: bool = False) -> Path:
    """The run's directory as `lab run` writes it; ``older`` rewrites result.json without the
    fields later schema-1 documents added, and renders report.html from that."""
    directory = report.write(result, root)
    if older:
        path = directory / "result.json"
        document = json.loads(path.read_text())
        for key in NEWER_FIELDS:
            document.pop(key, None)
        for check in document["checks"]:
            for key in NEWER_CHECK_FIELDS:
                check.pop(key, None)
        path.write_text(json.dumps(document))
        report.html.write(directory)
    return directory
