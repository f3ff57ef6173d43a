"""report.html from result.json, without a browser: what the page draws and says, for documents
with and without the objectives layer, small and aggregated runs. (tests/integration/
test_report.py opens a real run's page in Chromium.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from report_runs import TARGET, failover_result, with_locks_pool_and_health, write

from lab.errors import LabError
from lab.report import html, stored
from lab.report.panels import POINT_LIMIT
from lab.report.svg import LEFT, PLOT_W


def _attr(tag: str, name: str) -> str:
    match = re.search(rf'\b{name}="([^"]*)"', tag)
    assert match, (name, tag)
    return match.group(1)


def _tags(page: str, pattern: str) -> list[str]:
    return re.findall(pattern, page)


def _x(page: str, seconds: float) -> float:
    svg = _tags(page, r"<svg class=\"timeline\"[^>]*>")[0]
    return LEFT + seconds / float(_attr(svg, "data-span")) * PLOT_W


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write(failover_result(), tmp_path)


def test_every_run_directory_gets_a_report(run_dir: Path) -> None:
    """lab.report.write leaves report.html next to result.json."""
    assert (run_dir / "result.json").is_file()
    assert (run_dir / "report.html").is_file()


def test_one_point_per_request_at_its_intended_time(run_dir: Path) -> None:
    """A small run draws each request once, at x = its intended send time."""
    page = (run_dir / "report.html").read_text()
    document = json.loads((run_dir / "result.json").read_text())
    requests = document["history"]["requests"]
    points = _tags(page, r"<(?:circle|path|rect) class=\"req[ \"][^>]*>")
    assert len(points) == len(requests)
    assert {int(_attr(p, "data-id")) for p in points} == {r["id"] for r in requests}
    first = next(p for p in points if _attr(p, "data-id") == "0")
    started = document["started_at"]
    assert float(_attr(first, "data-t")) == pytest.approx(requests[0]["intended_at"] - started,
                                                          abs=1e-3)
    assert float(_attr(first, "cx")) == pytest.approx(_x(page, float(_attr(first, "data-t"))),
                                                      abs=0.1)


def test_failures_are_drawn_apart_from_answers(run_dir: Path) -> None:
    """A failed request is a cross, not a backend's dot."""
    page = (run_dir / "report.html").read_text()
    document = json.loads((run_dir / "result.json").read_text())
    failed = [r for r in document["history"]["requests"] if r["outcome"] == "fail"]
    crosses = _tags(page, r"<path class=\"req fail\"[^>]*>")
    assert failed and len(crosses) == len(failed)


def test_fault_band_spans_inject_to_heal(run_dir: Path) -> None:
    """The fault is shaded from its inject to its heal, both relative to the run's start."""
    page = (run_dir / "report.html").read_text()
    document = json.loads((run_dir / "result.json").read_text())
    inject, heal = (e["at"] - document["started_at"] for e in document["history"]["faults"])
    group = _tags(page, r"<g class=\"fault\"[^>]*>")[0]
    assert _attr(group, "data-target") == TARGET
    assert float(_attr(group, "data-inject")) == pytest.approx(inject, abs=1e-3)
    assert float(_attr(group, "data-heal")) == pytest.approx(heal, abs=1e-3)
    band = _tags(page, r"<rect class=\"fault-band\"[^>]*>")[0]
    left, width = float(_attr(band, "x")), float(_attr(band, "width"))
    assert left == pytest.approx(_x(page, inject), abs=0.1)
    assert left + width == pytest.approx(_x(page, heal), abs=0.2)


def test_markers_at_the_measured_ejection_and_readmission(run_dir: Path) -> None:
    """Ejection is marked measured_s after the inject, readmission measured_s after the heal."""
    page = (run_dir / "report.html").read_text()
    document = json.loads((run_dir / "result.json").read_text())
    inject, heal = (e["at"] - document["started_at"] for e in document["history"]["faults"])
    checks = {c["name"]: c for c in document["checks"]}
    marks = {_attr(m, "data-check"): float(_attr(m, "data-t"))
             for m in _tags(page, r"<g class=\"marker\"[^>]*>")}
    assert marks["ejection"] == pytest.approx(inject + checks["ejection"]["values"]["measured_s"],
                                              abs=1e-3)
    assert marks["readmission"] == pytest.approx(
        heal + checks["readmission"]["values"]["measured_s"], abs=1e-3)


def test_checks_table_verdicts_equal_the_result(run_dir: Path) -> None:
    """Every check row and objective row carries the verdict result.json gives it."""
    page = (run_dir / "report.html").read_text()
    document = json.loads((run_dir / "result.json").read_text())
    rows = {_attr(r, "data-name"): _attr(r, "data-verdict")
            for r in _tags(page, r"<tr class=\"check\"[^>]*>")}
    assert rows == {c["name"]: c["verdict"] for c in document["checks"]}
    objectives = {(_attr(r, "data-check"), _attr(r, "data-name")): _attr(r, "data-verdict")
                  for r in _tags(page, r"<tr class=\"objective\"[^>]*>")}
    assert objectives == {(c["name"], o["name"]): o["verdict"]
                          for c in document["checks"] for o in c["objectives"]}
    assert "out of rotation within 1.45 s" in page  # the prediction, beside its objective


def test_the_run_section_says_what_ran(run_dir: Path) -> None:
    """Description, steps, durations, configuration, seed and version are on the page."""
    page = (run_dir / "report.html").read_text()
    for text in ("Kill a backend.", f"inject kill on {TARGET}", "fail_timeout",
                 "default_pool_size", "seed 7", "lab version 0.1.0"):
        assert text in page, text


def test_the_page_fetches_nothing(run_dir: Path) -> None:
    """No script, stylesheet, image or font is loaded from anywhere: the page is one file."""
    page = (run_dir / "report.html").read_text()
    assert not re.search(r"<(script|link|img|iframe)\b", page)
    assert not re.search(r"(src|href)=", page)
    in_tags = re.findall(r"<[^>]*https?://[^>]*>", page)  # URLs in text are only text
    assert [re.findall(r"https?://[^\"]*", tag) for tag in in_tags] == [
        ["http://www.w3.org/2000/svg"]]  # the SVG namespace's name, never fetched


def test_a_document_without_the_objectives_layer_renders(tmp_path: Path) -> None:
    """result.json written before verdicts, objectives and steps existed still gives a page."""
    directory = write(failover_result(), tmp_path, older=True)
    page = (directory / "report.html").read_text()
    assert "conformance" not in page.split("<h2>Checks</h2>")[1].split("</tr>")[0]
    assert "lab version not recorded" in page
    assert f"inject kill on {TARGET} at +" in page  # the faults stand in for the steps
    assert len(_tags(page, r"<g class=\"marker\"[^>]*>")) == 2


def test_large_runs_are_aggregated_with_exact_counts(tmp_path: Path) -> None:
    """Past POINT_LIMIT requests, answered ones become cells whose counts add up exactly."""
    result = failover_result(rate=200.0, duration_s=POINT_LIMIT / 200 + 10)
    directory = write(result, tmp_path)
    page = (directory / "report.html").read_text()
    group = _tags(page, r"<g class=\"requests\"[^>]*>")[0]
    assert _attr(group, "data-mode") == "aggregate"
    cells = sum(int(_attr(c, "data-n")) for c in _tags(page, r"<rect class=\"cell [^>]*>"))
    points = len(_tags(page, r"<(?:circle|path) class=\"req[ \"][^>]*>"))
    assert cells + points == len(result.history.requests)
    counts = _tags(page, r"<tr class=\"client\"[^>]*>")
    assert sum(int(_attr(c, "data-n")) for c in counts) == len(result.history.requests)


def test_lock_pool_and_health_panels(tmp_path: Path) -> None:
    """Job runs as bars with their overlap in red and the refusal marked; the pool's series
    and size; the watched endpoint's status."""
    result = failover_result()
    with_locks_pool_and_health(result.history)
    page = (write(result, tmp_path) / "report.html").read_text()
    runs = _tags(page, r"<rect class=\"job-run\"[^>]*>")
    assert {(_attr(r, "data-node"), _attr(r, "data-outcome")) for r in runs} == {
        ("backend-1", "ok"), ("backend-3", "running")}
    overlaps = _tags(page, r"<rect class=\"overlap\"[^>]*>")
    assert len(overlaps) == 2  # the shared 2 s, drawn on both nodes' lanes
    assert float(_attr(overlaps[0], "width")) == pytest.approx(_x(page, 2.5) - _x(page, 0.5),
                                                               abs=0.2)
    assert len(_tags(page, r"<path class=\"fenced\"[^>]*>")) == 1
    assert _attr(_tags(page, r"<line class=\"pool-size\"[^>]*>")[0], "data-size") == "30"
    series = {_attr(p, "data-series") for p in _tags(page, r"<polyline class=\"pool\"[^>]*>")}
    assert {"server connections", "waiting clients"} <= series
    statuses = [_attr(h, "data-status") for h in _tags(page, r"<rect class=\"health\"[^>]*>")]
    assert statuses == ["200", "503"]


def test_unreadable_results_say_what_is_wrong(tmp_path: Path) -> None:
    """A missing, malformed or foreign result.json is a LabError naming the file."""
    with pytest.raises(LabError, match="no such file"):
        stored.load(tmp_path)
    (tmp_path / "result.json").write_text("{")
    with pytest.raises(LabError, match="not a readable result"):
        stored.load(tmp_path)
    (tmp_path / "result.json").write_text(json.dumps({"schema": 2}))
    with pytest.raises(LabError, match="not a lab result of schema 1"):
        stored.load(tmp_path)
    (tmp_path / "result.json").write_text(json.dumps({"schema": 1, "scenario": "x"}))
    with pytest.raises(LabError, match="seed"):
        stored.load(tmp_path)


def test_band_and_markers_come_from_the_registries(run_dir: Path) -> None:
    """The fault band is coloured and named as the fault's definition says, the markers are
    those of the checks whose entry declares one, and an old result's unknown fault or check
    is drawn plainly instead of failing the page."""
    from lab.checks import CHECKS
    from lab.faults import FAULTS

    page = (run_dir / "report.html").read_text()
    document = json.loads((run_dir / "result.json").read_text())
    band = FAULTS.get(document["history"]["faults"][0]["fault"]).band
    assert f"fill:{band.colour}" in _tags(page, r"<rect class=\"fault-band\"[^>]*>")[0]
    assert f"▮ {band.legend}: inject to heal" in page
    marked = {_attr(m, "data-check") for m in _tags(page, r"<g class=\"marker\"[^>]*>")}
    assert marked == {c["name"] for c in document["checks"] if CHECKS.get(c["name"]).marker}

    for event in document["history"]["faults"]:
        event["fault"] = "a-fault-this-lab-no-longer-has"
    for check in document["checks"]:
        check["name"] = f"retired-{check['name']}"
    old = html.render(stored.from_document(document))
    assert 'class="fault-band"' in old and 'class="marker"' not in old


def test_a_run_without_time_series_says_so(tmp_path: Path) -> None:
    """A run that recorded no requests or samples (a probe-only scenario) still gets a page."""
    result = failover_result()
    result.history.requests.clear()
    result.history.access_log.clear()
    result.history.faults.clear()
    page = (write(result, tmp_path) / "report.html").read_text()
    assert "No time series were recorded in this run" in page
    assert len(_tags(page, r"<tr class=\"check\"[^>]*>")) == len(result.checks)
