"""JUnit XML of runs, read back with junitparser as CI's readers would; `lab report` and
`lab runs` on written run directories (no Docker)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml
from report_runs import failover_result, write
from typer.testing import CliRunner

from lab import report
from lab.cli.app import app
from lab.errors import LabError
from lab.report import junit, runs

cli = CliRunner()


def _cases(path: Path) -> dict[tuple[str, str], object]:
    return {(suite.name, case.name): case for suite in JUnitXml.fromfile(str(path))
            for case in suite}


def test_a_testcase_per_check_and_objective(tmp_path: Path) -> None:
    """Each check and each objective it judged is a testcase of the scenario's suite."""
    directory = write(failover_result(unknown_check=True), tmp_path)
    path = tmp_path / "junit.xml"
    junit.add_run(path, directory, fresh=True)
    document = json.loads((directory / "result.json").read_text())
    expected = {("failover", c["label"]) for c in document["checks"]}
    expected |= {("failover", f"{c['label']}: objective {o['name']}")
                 for c in document["checks"] for o in c["objectives"]}
    assert set(_cases(path)) == expected


def test_fail_is_a_failure_and_unknown_an_error(tmp_path: Path) -> None:
    """A failed check is a <failure> with measured, expected and derivation; an undecided one
    an <error>; a failed objective its own <failure>; passing ones have no result."""
    path = tmp_path / "junit.xml"
    junit.add_run(path, write(failover_result(unknown_check=True), tmp_path), fresh=True)
    cases = _cases(path)
    [failure] = cases[("failover", "availability")].result
    assert isinstance(failure, Failure)
    assert failure.message == ("fail: measured: 396/400 ok; expected: success ratio >= 0.999; "
                               "derivation: SLO 0.999 over 400 requests allows 0 non-ok")
    [error] = cases[("failover", "distribution")].result
    assert isinstance(error, Error) and error.type == "unknown"
    [missed] = cases[("failover", "availability: objective availability")].result
    assert isinstance(missed, Failure) and "expected: >= 0.9999" in missed.message
    assert cases[("failover", "ejection")].is_passed
    assert "predicted: out of rotation within 1.45 s" in \
        cases[("failover", "ejection: objective ejection")].system_out
    suite = next(iter(JUnitXml.fromfile(str(path))))
    assert (suite.tests, suite.failures, suite.errors) == (6, 2, 1)


def test_the_run_directory_is_a_property(tmp_path: Path) -> None:
    """The suite names the run directory, its report and the seed."""
    directory = write(failover_result(), tmp_path)
    path = tmp_path / "junit.xml"
    junit.add_run(path, directory, fresh=True)
    suite = next(iter(JUnitXml.fromfile(str(path))))
    properties = {p.name: p.value for p in suite.properties()}
    assert properties["run_dir"] == str(directory)
    assert properties["report"] == str(directory / "report.html")
    assert properties["seed"] == "7"
    assert suite.time == pytest.approx(20.5)


def test_suites_are_added_one_run_at_a_time(tmp_path: Path) -> None:
    """A second run adds a suite; fresh starts a new file; a foreign file is refused."""
    path = tmp_path / "junit.xml"
    first, second = (write(failover_result(), tmp_path / "a"),
                     write(failover_result(), tmp_path / "b"))
    junit.add_run(path, first, fresh=True)
    junit.add_run(path, second, fresh=False)
    document = JUnitXml.fromfile(str(path))
    assert len(list(document)) == 2 and document.tests == 10 and document.failures == 4
    junit.add_run(path, first, fresh=True)
    assert len(list(JUnitXml.fromfile(str(path)))) == 1
    path.write_text("<html/>")
    with pytest.raises(LabError, match="not a JUnit file"):
        junit.add_run(path, first, fresh=False)


def test_runs_are_listed_oldest_first_and_unreadable_ones_said(tmp_path: Path) -> None:
    """The newest run is the last written; a broken result.json is listed with its problem."""
    old, new = write(failover_result(), tmp_path / "x"), write(failover_result(), tmp_path / "y")
    root = tmp_path / "runs"
    root.mkdir()
    (old.rename(root / "old")).joinpath("result.json").touch()
    os.utime(root / "old" / "result.json", (1, 1))
    new.rename(root / "new")
    broken = root / "broken"
    broken.mkdir()
    (broken / "result.json").write_text("{")
    os.utime(broken / "result.json", (2, 2))
    assert [d.name for d in runs.run_directories(root)] == ["old", "broken", "new"]
    assert runs.newest(root).name == "new"
    listed = runs.list_runs(root)
    assert [r.summary.scenario if r.summary else None for r in listed] == ["failover", None,
                                                                           "failover"]
    assert "not a readable result" in listed[1].problem
    with pytest.raises(LabError, match="no runs in"):
        runs.newest(tmp_path / "nothing")


def test_lab_report_rerenders_the_newest_run(tmp_path: Path) -> None:
    """`lab report` without a directory re-renders the newest run's report.html."""
    directory = write(failover_result(), tmp_path)
    (directory / "report.html").unlink()
    done = cli.invoke(app, ["report", "--report-dir", str(tmp_path)])
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == str(directory / "report.html")
    assert (directory / "report.html").is_file()


def test_lab_report_and_runs_refuse_what_is_not_a_run(tmp_path: Path) -> None:
    """A directory without result.json, or an empty report dir: one message, exit 2."""
    done = cli.invoke(app, ["report", str(tmp_path)])
    assert done.exit_code == 2 and "holds no result.json" in done.output
    done = cli.invoke(app, ["report", "--report-dir", str(tmp_path / "none")])
    assert done.exit_code == 2 and "no runs in" in done.output
    done = cli.invoke(app, ["runs", "--report-dir", str(tmp_path / "none")])
    assert done.exit_code == 0 and "no runs in" in done.output


def test_lab_runs_lists_time_scenario_verdict_seed_and_wall_time(tmp_path: Path) -> None:
    """One row per run with the columns a person scans for."""
    directory = write(failover_result(), tmp_path)
    done = cli.invoke(app, ["runs", "--report-dir", str(tmp_path)], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    row = next(line for line in done.stdout.splitlines() if directory.name in line)
    for text in ("2023-11-14", "failover", "fail", "7", "20.5 s"):
        assert text in row, (text, row)


def _load_run(root: Path) -> Path:
    """A `lab load` run's directory: the top of its result.json as lab.load.report writes it."""
    directory = root / "20261201-100000-load-smoke"
    directory.mkdir(parents=True)
    (directory / "result.json").write_text(json.dumps({
        "schema": 1, "kind": "load", "profile": "smoke", "lab": "t", "lab_version": "0.1.0",
        "started_at": 1.0e9, "finished_at": 1.0e9 + 40, "wall_time_s": 40.0,
        "verdict": "pass", "reason": ""}))
    return directory


def test_a_load_run_is_listed_and_not_rendered(tmp_path: Path) -> None:
    """`lab load` writes into the same report directory: `lab runs` lists it as
    `load <profile>` without a seed, `lab report` skips it for the newest scenario run and
    refuses it by name (its report is k6's dashboard), exit 2."""
    scenario_run = write(failover_result(), tmp_path, older=True)
    load_run = _load_run(tmp_path)
    listed = runs.list_runs(tmp_path)
    assert [r.summary.scenario for r in listed if r.summary] == ["failover", "load smoke"]
    assert listed[1].summary.seed is None and listed[1].summary.kind == "load"
    assert runs.newest(tmp_path) == scenario_run
    shown = cli.invoke(app, ["runs", "--report-dir", str(tmp_path)], terminal_width=200)
    assert shown.exit_code == 0 and "load smoke" in shown.output, shown.output
    assert "unreadable" not in shown.output
    refused = cli.invoke(app, ["report", str(load_run)])
    assert refused.exit_code == 2 and "is a `lab load` run" in refused.output
    only_load = tmp_path / "only"
    _load_run(only_load)
    refused = cli.invoke(app, ["report", "--report-dir", str(only_load)])
    assert refused.exit_code == 2 and "only `lab load` runs" in refused.output


def test_a_scenario_report_links_the_load_beside_it(tmp_path: Path) -> None:
    """A scenario run with load beside its steps links the k6 run's files, relatively."""
    load_run = _load_run(tmp_path)
    (load_run / "dashboard.html").write_text("<html></html>")
    directory = report.write(failover_result(), tmp_path, load_run=load_run)
    document = json.loads((directory / "result.json").read_text())
    assert document["load"] == {"directory": f"../{load_run.name}",
                                "files": ["dashboard.html", "result.json"]}
    page = (directory / "report.html").read_text()
    assert f'<a href="../{load_run.name}/dashboard.html">dashboard.html</a>' in page
    assert (directory / f"../{load_run.name}/dashboard.html").resolve().is_file()
    plain = report.write(failover_result(), tmp_path / "plain")
    assert "Load beside the steps" not in (plain / "report.html").read_text()
