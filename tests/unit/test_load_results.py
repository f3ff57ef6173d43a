"""k6's CSV output and summary read back as the lab's records, windows, break point and verdict."""

from __future__ import annotations

import json

import pytest

from lab.history import AccessLogEntry, ContainerSample, Outcome, RequestRecord
from lab.load.observe import first_saturated, node_loads
from lab.load.placement import Target
from lab.load.profiles import build_plan
from lab.load.results import (
    CsvTail,
    RecordBuilder,
    find_break,
    judge_records,
    outcome_of,
    parse_rows,
    read_summary,
    verdict_of,
    windows,
)
from lab.load.runner import with_backends
from lab.load.thresholds import LoadThresholds
from lab.verdict import Verdict

# The columns k6 1.1 writes with the lab's systemTags (lab.load.script.SYSTEM_TAGS).
HEADER = (
    "metric_name,timestamp,metric_value,error,error_code,expected_response,method,name,"
    "scenario,status,extra_tags,metadata\n"
)
START_MS = 1_700_000_000_000  # the scenario's start, as k6 reports it (ms)


def lab_row(iteration: int, end_s: float, ms: float, status: int = 200, error: str = "") -> str:
    """An http_req_duration row of the lab's script: its metadata names the iteration."""
    text, code = ("boom", error) if error else ("", "")
    return (
        f"http_req_duration,{round(end_s * 1e6)},{ms},{text},{code},true,GET,"
        f"http://nginx/health,main,{status},,i={iteration}&s={START_MS}\n"
    )


def record(i: int, *, latency_s: float | None = 0.01, status: int | None = 200,
           outcome: Outcome = Outcome.OK) -> RequestRecord:
    """One request of a user's script (k6 scenario "default")."""
    return RequestRecord(i, "default", "GET", "/", 100.0 + i, 100.0 + i, latency_s,
                         status if latency_s is not None or outcome is Outcome.FAIL else None,
                         None, outcome)


def plan20():
    return build_plan("smoke", {"rate": 20, "duration_s": 2}, LoadThresholds())


def test_duration_rows_become_records() -> None:
    """An http_req_duration row is one record: sent = end - latency, intended from the
    schedule; k6's other metrics are not records."""
    t0 = START_MS / 1000
    text = (
        HEADER + f"http_req_waiting,{round((t0 + 0.06) * 1e6)},3.0,,,true,GET,http://nginx/health,"
        "main,200,,i=0&s=1\n" + lab_row(0, t0 + 0.06, 4.0)
    )
    builder = RecordBuilder(plan20())
    builder.feed(parse_rows(text))
    (record,) = builder.collected.records
    assert record.client == "main" and record.path == "/health" and record.method == "GET"
    assert record.sent_at == pytest.approx(t0 + 0.056)
    assert record.intended_at == pytest.approx(t0 + 0.05)  # iteration 0 at 1/20 s
    assert record.latency_s == pytest.approx(0.004)
    assert record.backend is None and record.outcome is Outcome.OK
    assert record.request_id == "main-0"
    assert builder.collected.started_at == pytest.approx(t0)


def test_backend_from_nginx_by_request_id() -> None:
    """The serving backend is NGINX's last upstream for the request id; sent straight to a
    backend, it is that backend."""
    builder = RecordBuilder(plan20())
    builder.feed(parse_rows(HEADER + lab_row(0, 1.7e9, 3.0) + lab_row(1, 1.7e9 + 0.05, 3.0)))
    entry = AccessLogEntry(
        1.7e9,
        0.003,
        "GET",
        "/health",
        200,
        ("a", "b"),
        ("backend-1", "backend-2"),
        ("502", "200"),
        (0.001, 0.002),
        "-",
        request_id="main-0",
    )
    served = with_backends(builder.collected.records, [entry], Target())
    assert [r.backend for r in served] == ["backend-2", None]
    direct = with_backends(builder.collected.records, [], Target("backend-1", 8000))
    assert {r.backend for r in direct} == {"backend-1"}


def test_status_and_error_outcomes() -> None:
    """>= 400 fails; no status: dial errors fail (never sent), timeouts are unknown."""
    assert outcome_of(201, 0) is Outcome.OK and outcome_of(429, 0) is Outcome.FAIL
    assert outcome_of(0, 1212) is Outcome.FAIL  # connection refused
    assert outcome_of(0, 1101) is Outcome.FAIL  # no IP for the host
    assert outcome_of(0, 1050) is Outcome.UNKNOWN  # request timeout
    assert outcome_of(0, 1220) is Outcome.UNKNOWN  # reset by peer: may have happened
    builder = RecordBuilder(plan20())
    builder.feed(parse_rows(HEADER + lab_row(3, 1.7e9, 10000.0, status=0, error="1050")))
    (record,) = builder.collected.records
    assert record.status is None and record.latency_s is None and record.error == "boom"
    assert record.outcome is Outcome.UNKNOWN


def test_user_script_rows_without_plan() -> None:
    """A user's script: http_req_duration rows, path from the name tag, intended = sent."""
    text = (
        "metric_name,timestamp,metric_value,check,error,error_code,expected_response,group,"
        "method,name,proto,scenario,service,status,subproto,tls_version,url,extra_tags,"
        "metadata\n"
        "http_req_duration,1700000000500000,5.0,,,,true,,GET,health,HTTP/1.1,browse,,200,,,"
        "http://nginx/health,,\n"
        "http_reqs,1700000000500000,1,,,,true,,GET,health,HTTP/1.1,browse,,200,,,,,\n"
        "dropped_iterations,1700000000600000,1,,,,,,,,,browse,,,,,,,\n"
    )
    builder = RecordBuilder(None)
    builder.feed(parse_rows(text))
    (record,) = builder.collected.records
    assert record.path == "health" and record.client == "browse" and record.backend is None
    assert record.intended_at == record.sent_at and record.request_id is None
    assert builder.collected.dropped == [(1700000000.6, "browse")]


def test_csv_tail_reads_only_complete_lines(tmp_path) -> None:
    """A line k6 has not finished writing waits for the next read; the header is kept."""
    path = tmp_path / "points.csv"
    tail = CsvTail(path)
    assert tail.read() == []
    row = lab_row(0, 1.7e9, 3.0)
    path.write_text(HEADER + row[:20])
    assert tail.read() == []
    with path.open("a") as handle:
        handle.write(row[20:] + lab_row(1, 1.7e9 + 0.05, 2.0)[:10])
    (first,) = tail.read()
    assert first.metric == "http_req_duration" and first.metadata["i"] == "0"
    with path.open("a") as handle:
        handle.write(lab_row(1, 1.7e9 + 0.05, 2.0)[10:])
    (second,) = tail.read()
    assert second.metadata["i"] == "1" and second.tags["status"] == "200"


def test_summary_thresholds_map_failed_flags(tmp_path) -> None:
    """k6's summary export maps each threshold to whether it failed."""
    path = tmp_path / "summary.json"
    path.write_text(
        json.dumps(
            {
                "metrics": {
                    "http_req_duration{scenario:main}": {
                        "p(95)": 250.0,
                        "thresholds": {"p(95)<200": True},
                    },
                    "http_req_failed{scenario:main}": {
                        "value": 0.0,
                        "thresholds": {"rate<0.01": False},
                    },
                }
            }
        )
    )
    _, results = read_summary(path)
    by = {r.metric: r for r in results}
    assert not by["http_req_duration{scenario:main}"].passed
    assert by["http_req_duration{scenario:main}"].value == 250.0
    assert (
        by["http_req_failed{scenario:main}"].passed
        and by["http_req_failed{scenario:main}"].value == 0
    )
    assert read_summary(tmp_path / "missing.json") == ({}, ())


def test_dropped_schedule_is_unknown_only_when_what_was_sent_passes() -> None:
    """Requests that were sent and breached a threshold fail the run however many iterations
    k6 dropped; a run whose sent requests passed but which dropped beyond the allowance is
    unknown: the requests that would show the system at the asked rate were never sent."""
    _, failed = _thresholds(passed=False)
    verdict = verdict_of(99, failed, dropped=71, scheduled=900, sent=829, max_dropped=0.0)
    assert verdict.verdict is Verdict.FAIL
    assert "thresholds failed" in verdict.reason and "dropped 71 of 900" in verdict.reason
    _, held = _thresholds(passed=True)
    verdict = verdict_of(0, held, dropped=71, scheduled=900, sent=829, max_dropped=0.0)
    assert verdict.verdict is Verdict.UNKNOWN
    assert "the generator could not keep the schedule" in verdict.reason
    assert verdict_of(0, held, 1, 1000, 999, max_dropped=0.01).verdict is Verdict.PASS


def test_a_run_nothing_judged_is_not_a_pass() -> None:
    """No threshold at all (a script that sets none, and no objective judged it): unknown."""
    assert verdict_of(0, (), 0, None, 100, 0.0).verdict is Verdict.UNKNOWN


@pytest.mark.covers("objective:load_p95", "objective:availability")
def test_a_scripts_requests_are_judged_by_the_objectives(negative_control) -> None:
    """A user's script that sets no thresholds is judged on its own requests: p95 per k6
    scenario (no answer counts as slower than any) and the share not ok."""
    fast = [record(i, latency_s=0.01) for i in range(99)] + [record(99, latency_s=0.02)]
    judged = judge_records(fast, 0.2, 0.001)
    assert all(t.passed for t in judged) and len(judged) == 2
    assert verdict_of(0, judged, 0, None, 100, 0.0).verdict is Verdict.PASS
    slow = [record(i, latency_s=0.5) for i in range(100)]
    failing = [record(i, latency_s=0.01) for i in range(98)] + [
        record(98, latency_s=None, outcome=Outcome.UNKNOWN),
        record(99, status=503, outcome=Outcome.FAIL)]
    p95 = judge_records(slow, 0.2, 0.001)
    errors = judge_records(failing, 0.2, 0.001)
    assert [t.passed for t in p95] == [False, True]
    assert [t.passed for t in errors] == [True, False]
    assert errors[1].value == pytest.approx(0.02)
    for bad in (p95, errors):
        assert verdict_of(0, bad, 0, None, 100, 0.0).verdict is Verdict.FAIL
    negative_control.observe_objective("load_p95", Verdict.FAIL)
    negative_control.observe_objective("availability", Verdict.FAIL)


def test_threshold_failure_fails_and_pass_passes() -> None:
    """k6's exit 99 (or a failed threshold) fails; a clean run with held thresholds passes."""
    _, failed = _thresholds(passed=False)
    _, held = _thresholds(passed=True)
    assert verdict_of(99, failed, 0, 100, 100, 0.0).verdict is Verdict.FAIL
    assert verdict_of(0, held, 0, 100, 100, 0.0).verdict is Verdict.PASS
    assert verdict_of(108, held, 0, 100, 100, 0.0).verdict is Verdict.UNKNOWN
    assert verdict_of(0, held, 0, 100, 0, 0.0).verdict is Verdict.UNKNOWN


def _thresholds(passed: bool):
    from lab.load.results import ThresholdResult

    return {}, (ThresholdResult("http_req_duration{scenario:main}", "p(95)<200", passed, 250.0),)


def _record(i: int, sent: float, latency: float | None, status: int | None = 200) -> RequestRecord:
    outcome = (
        Outcome.OK if status and status < 400 else (Outcome.FAIL if status else Outcome.UNKNOWN)
    )
    return RequestRecord(
        i, "main", "GET", "/health", sent, sent, latency, status, "backend-1", outcome
    )


def test_windows_and_break_point() -> None:
    """Windows count by send time; the break is the first window past a bound."""
    plan = build_plan("breakpoint", {"start": 10, "peak": 50, "duration_s": 4}, LoadThresholds())
    records = [_record(i, 0.01 * i, 0.005) for i in range(100)]  # 0-1 s: fast
    records += [_record(100 + i, 1 + 0.01 * i, 0.005) for i in range(100)]  # 1-2 s: fast
    records += [_record(200 + i, 2 + 0.01 * i, 0.5) for i in range(100)]  # 2-3 s: slow
    wins = windows(records, [], 0.0, plan)
    assert [w.sent for w in wins] == [100, 100, 100]
    assert wins[0].target_rate == pytest.approx(15)
    point = find_break(wins, p95_s=0.2, error_rate=0.01)
    assert point.found and point.at_s == 2.0 and point.sustained_rate == 100
    assert "p95 500.0 ms >= 200 ms" in point.reason
    failing = [_record(i, 0.01 * i, 0.005, 503 if i % 10 == 0 else 200) for i in range(100)]
    assert "errors 10.0%" in find_break(windows(failing, [], 0.0, None), 0.2, 0.01).reason
    assert (
        "dropped"
        in find_break(windows(records[:100], [(0.5, "main")], 0.0, None), None, None).reason
    )


def test_no_answer_counts_as_slower_than_any() -> None:
    """A request without an answer is an infinite latency in the window's percentiles."""
    records = [_record(i, 0.01 * i, 0.001) for i in range(90)]
    records += [_record(90 + i, 0.9 + 0.001 * i, None, None) for i in range(10)]
    (window,) = windows(records, [], 0.0, None)
    assert window.p95_s == float("inf") and window.unknown == 10


def _samples(node: str, cores: list[float], throttled: list[int] | None = None):
    cpu, out = 0.0, []
    for second, used in enumerate([0.0, *cores]):
        cpu += used
        out.append(
            ContainerSample(
                100.0 + second,
                node,
                cpu,
                2**20 * (10 + second),
                (throttled or [0] * (len(cores) + 1))[second],
                10 * second,
            )
        )
    return out


def test_node_saturation_against_its_quota() -> None:
    """A node at 90% of its quota is saturated; the earliest one is named, not the generator."""
    samples = (
        _samples("backend-1", [0.1, 0.29, 0.3, 0.3])
        + _samples("nginx", [0.1, 0.1, 0.39, 0.4])
        + _samples("k6", [1.9, 1.9, 1.9, 1.9])
    )
    loads = node_loads(samples, {"backend-1": 0.3, "nginx": 0.4, "k6": None}, 2, 100.0, 104.0)
    by = {n.node: n for n in loads}
    assert by["backend-1"].first_saturated_at == 101.0 and by["nginx"].first_saturated_at == 102.0
    assert by["backend-1"].peak_cpus == pytest.approx(0.3)
    assert by["backend-1"].memory_growth == 4 * 2**20
    first = first_saturated(loads)
    assert first is not None and first.node == "backend-1"
    throttled = node_loads(_samples("redis", [0.06, 0.06], [0, 8, 16]), {"redis": 0.1}, 2, 100, 102)
    assert throttled[0].first_saturated_at == 100.0 and throttled[0].throttled_share == 0.8
    idle = node_loads(_samples("redis", [0.01, 0.01], [0, 8, 16]), {"redis": 0.1}, 2, 100, 102)
    assert idle[0].first_saturated_at is None


def test_one_slow_second_is_not_a_break() -> None:
    """A single slow window between good ones (k6 opening connections, a neighbour's burst)
    is not where the system broke; two in a row are."""
    fast = [_record(i, 0.01 * i, 0.005) for i in range(100)]
    slow = [_record(100 + i, 1 + 0.01 * i, 0.5) for i in range(100)]
    again = [_record(200 + i, 2 + 0.01 * i, 0.005) for i in range(100)]
    assert not find_break(windows(fast + slow + again, [], 0.0, None), 0.2, None).found
    later = [_record(300 + i, 3 + 0.02 * i, 0.5) for i in range(100)]  # 3-5 s: slow
    point = find_break(windows(fast + slow + again + later, [], 0.0, None), 0.2, None)
    assert point.found and point.at_s == 3.0 and point.sustained_rate == 100
