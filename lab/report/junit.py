"""JUnit XML for CI: one ``testsuite`` per scenario run, one ``testcase`` per check and per
objective it judged.

A check's testcase carries its conformance verdict (measured against the configuration the
lab runs), each objective's testcase the objective's own verdict, so a missed threshold and a
broken model show up as separate failures. ``fail`` is a ``<failure>``, ``unknown`` an
``<error>`` (the run could not decide: CI must not count it as passed); the message holds the
measured value, the expectation and its derivation. The run directory is a property of its
suite, so a reader can find ``result.json`` and ``report.html``.

The XML is written and read by junitparser (the format Jenkins, GitLab and GitHub's JUnit
readers accept); suites are added one run at a time, so a file written before a later
scenario broke the lab still holds every finished run.
"""

from __future__ import annotations

import time
from pathlib import Path

from junitparser import Error, Failure, JUnitXml, JUnitXmlError, TestCase, TestSuite

from lab.checks import Verdict
from lab.errors import LabError
from lab.report.html import REPORT_FILE
from lab.report.stored import StoredVerdicts, load_verdicts

CLASS_PREFIX = "lab"


def _case(name: str, classname: str, verdict: Verdict, message: str, text: str) -> TestCase:
    case = TestCase(name, classname, 0.0)
    if verdict is Verdict.FAIL:
        result = Failure(message, "fail")
    elif verdict is Verdict.UNKNOWN:
        result = Error(message, "unknown")
    else:
        case.system_out = text
        return case
    result.text = text
    case.result = [result]
    return case


def suite(run: StoredVerdicts, directory: Path) -> TestSuite:
    """The testsuite of one run."""
    out = TestSuite(run.scenario)
    out.timestamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(run.started_at))
    classname = f"{CLASS_PREFIX}.{run.scenario}"
    for key, value in (("run_dir", str(directory)), ("report", str(directory / REPORT_FILE)),
                       ("seed", str(run.seed)), ("lab", run.lab), ("verdict", run.verdict.value),
                       ("lab_version", run.lab_version or "")):
        out.add_property(key, value)
    for check in run.checks:
        verdict = check.conformance or check.verdict
        message = (f"measured: {check.measured}; expected: {check.expected}; "
                   f"derivation: {check.derivation}")
        text = "\n".join([f"measured: {check.measured}", f"expected: {check.expected}",
                          f"derivation: {check.derivation}", *check.details])
        out.add_testcase(_case(check.display, classname, verdict, f"{verdict.value}: {message}",
                               text))
        predicted = {p.objective: p for p in run.predictions_for(check.name)}
        for objective in check.objectives:
            message = (f"measured: {objective.measured}; expected: {objective.threshold}; "
                       f"derivation: {objective.derivation}")
            lines = [f"objective {objective.name} of check {check.display}", *message.split("; ")]
            if (p := predicted.get(objective.name)) is not None:
                lines.append(f"predicted: {p.predicted} ({p.arithmetic})")
            out.add_testcase(_case(f"{check.display}: objective {objective.name}", classname,
                                   objective.verdict, f"{objective.verdict.value}: {message}",
                                   "\n".join(lines)))
    out.update_statistics()
    out.time = round(run.wall_s, 3)  # the run's wall time; its checks take no time of their own
    return out


def add_run(path: Path, directory: Path, *, fresh: bool) -> None:
    """Add the run in ``directory`` to the JUnit file ``path`` (a new file when ``fresh``)."""
    path = Path(path)
    document = JUnitXml("lab")
    if not fresh and path.is_file():
        try:
            document = JUnitXml.fromfile(str(path))
        except (JUnitXmlError, OSError, SyntaxError) as exc:
            raise LabError(f"{path}: not a JUnit file this run can add to ({exc})") from None
    document.add_testsuite(suite(load_verdicts(directory), Path(directory)))
    # Totals by hand: junitparser's own would recompute each suite's time from its testcases.
    suites = list(document)
    for field in ("tests", "failures", "errors", "skipped"):
        setattr(document, field, sum(getattr(s, field) or 0 for s in suites))
    document.time = round(sum(s.time or 0.0 for s in suites), 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not pretty-printed: re-reading and re-indenting would add blank lines at every run.
    document.write(str(path))
