"""Reports of real runs, as people and pipelines see them: a failover run's report.html opened
in headless Chromium (Debian's chromium, through Selenium and chromedriver), and the JUnit
files of a passing run and of a failing negative control read back with junitparser."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from typer.testing import CliRunner

from lab.cli.app import app
from lab.topology.lab import Lab

cli = CliRunner()
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1300,1000")

# A POST sent to a frozen backend is never retried (docs/semantics.md): clients get 504s, so
# availability 1.0 of the writes must fail, and the JUnit must say so.
FROZEN_WRITES = """\
name: frozen-writes
description: Freeze backend-1 under writes; the writes it had received fail with 504.
traffic:
  - {client: writes, rate: 6, method: POST, path: /api/messages, writes: true}
steps:
  - wait: 1
  - inject: {fault: freeze, target: backend-1}
  - wait: "read_timeout + 2"
  - heal: {fault: freeze, target: backend-1}
  - wait: 1
checks:
  - availability: {client: writes, slo: 1.0}
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile, quit at the end."""
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def failover_run(running_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`lab run failover --junit` on the session's lab; the run's directory."""
    root = tmp_path_factory.mktemp("failover-report")
    done = cli.invoke(app, ["run", "failover", "--name", running_lab.name, "--seed", "31",
                            "--report-dir", str(root / "runs"), "--junit", str(root / "junit.xml")])
    assert done.exit_code == 0, done.output
    [directory] = (root / "runs").glob("*-failover-31")
    return directory


def _x(driver: WebDriver, seconds: float) -> float:
    """Seconds from the run's start to x in the timeline's coordinates, from the page itself."""
    svg = driver.find_element(By.CSS_SELECTOR, "svg.timeline")
    left, width = float(svg.get_attribute("data-left")), float(svg.get_attribute("data-width"))
    return left + seconds / float(svg.get_attribute("data-span")) * width


def _box(driver: WebDriver, element: object) -> dict[str, float]:
    return driver.execute_script("const b = arguments[0].getBBox(); "
                                 "return {x: b.x, y: b.y, width: b.width, height: b.height};",
                                 element)


def test_failover_report_in_chromium(failover_run: Path, browser: WebDriver) -> None:
    """The page a person opens: a point per request, the kill shaded from inject to heal, a
    marker at the measured ejection and re-admission, the checks' verdicts as result.json has
    them."""
    document = json.loads((failover_run / "result.json").read_text())
    browser.get((failover_run / "report.html").resolve().as_uri())
    assert browser.title == f"failover: {document['verdict']}"

    points = browser.find_elements(By.CSS_SELECTOR, "svg.timeline .req")
    requests = document["history"]["requests"]
    assert len(points) == len(requests)
    assert {int(p.get_attribute("data-id")) for p in points} == {r["id"] for r in requests}

    started = document["started_at"]
    # The first round of the crash loop: its inject and heal (the second round follows).
    inject, heal = (e["at"] - started for e in document["history"]["faults"][:2])
    band = browser.find_element(By.CSS_SELECTOR, 'g.fault[data-target="backend-1"] rect')
    box = _box(browser, band)
    assert box["x"] == pytest.approx(_x(browser, inject), abs=0.5)
    assert box["x"] + box["width"] == pytest.approx(_x(browser, heal), abs=0.5)
    assert band.is_displayed()

    checks = {c["name"]: c for c in document["checks"]}
    for name, after in (("ejection", inject), ("readmission", heal)):
        marker = browser.find_element(By.CSS_SELECTOR, f'g.marker[data-check="{name}"]')
        line = marker.find_element(By.CSS_SELECTOR, "line")
        at = after + checks[name]["values"]["measured_s"]
        assert _box(browser, line)["x"] == pytest.approx(_x(browser, at), abs=0.5)
        assert f"+{checks[name]['values']['measured_s']:.3f} s" in marker.text

    rows = browser.find_elements(By.CSS_SELECTOR, "table.checks tr.check")
    shown = {row.get_attribute("data-name"): row.find_elements(By.CSS_SELECTOR, ".verdict")[0].text
             for row in rows}
    assert shown == {name: check["verdict"] for name, check in checks.items()}


def test_failover_junit_reads_back(failover_run: Path) -> None:
    """The passing run's JUnit: a suite named after the scenario, every case passed, the run
    directory as a property."""
    junit = JUnitXml.fromfile(str(failover_run.parent.parent / "junit.xml"))
    [suite] = list(junit)
    assert suite.name == "failover" and suite.failures == 0 and suite.errors == 0
    document = json.loads((failover_run / "result.json").read_text())
    cases = len(document["checks"]) + sum(len(c["objectives"]) for c in document["checks"])
    assert suite.tests == cases and all(case.is_passed for case in suite)
    assert {p.name: p.value for p in suite.properties()}["run_dir"] == str(failover_run)


def test_junit_of_a_failing_negative_control(running_lab: Lab, tmp_path: Path) -> None:
    """Writes to a frozen backend fail: NGINX does not retry a sent POST, as configured, so
    availability conforms and the JUnit has a failure for its objective (this stream's slo 1.0)
    with what was measured and expected; a run that could not decide is an error."""
    frozen = tmp_path / "frozen-writes.yaml"
    frozen.write_text(FROZEN_WRITES)
    shipped = (Path(__file__).parents[2] / "scenarios" / "distribution.yaml").read_text()
    undecidable = tmp_path / "too-few.yaml"
    undecidable.write_text(shipped.replace("name: distribution", "name: too-few")
                           .replace("- distribution: {client: reads}",
                                    "- distribution: {client: reads, min_requests: 100000}"))
    junit = tmp_path / "junit.xml"
    done = cli.invoke(app, ["run", str(frozen), str(undecidable), "--name", running_lab.name,
                            "--seed", "32", "--report-dir", str(tmp_path / "runs"),
                            "--junit", str(junit)])
    assert done.exit_code == 1, done.output
    suites = {suite.name: suite for suite in JUnitXml.fromfile(str(junit))}
    assert set(suites) == {"frozen-writes", "too-few"}
    conforms = next(c for c in suites["frozen-writes"] if c.name == "availability")
    assert conforms.is_passed
    availability = next(c for c in suites["frozen-writes"]
                        if c.name == "availability: objective availability")
    [failure] = availability.result
    assert isinstance(failure, Failure)
    assert failure.message.startswith("fail: measured: ")
    assert "expected: >= 1" in failure.message and "derivation: " in failure.message
    distribution = next(c for c in suites["too-few"] if c.name == "distribution")
    [error] = distribution.result
    assert isinstance(error, Error) and error.type == "unknown"
