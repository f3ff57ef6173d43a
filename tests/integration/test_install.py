"""The lab installed outside its checkout: a wheel in a fresh virtual environment (no system
site-packages) lists and explains the shipped scenarios and builds the same images; the CI
example's commands (docs/ci/github-actions.yml) install the lab with pip and rehearse a suite
with --junit, exactly as the workflow says."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml
from junitparser import JUnitXml

from lab.engine import LABEL_LAB, Engine
from lab.scenarios.loader import available
from lab.topology.images import ROLES, inputs_hash
from tests.conftest import session_lab_name

CHECKOUT = Path(__file__).resolve().parents[2]
WORKFLOW = CHECKOUT / "docs" / "ci" / "github-actions.yml"
# What the workflow's `uses:` steps do, and what the test does in their place.
EMULATED = {"actions/checkout": "a copy of the checkout", "actions/setup-python": "a fresh venv",
            "mikepenz/action-junit-report": "junitparser reads the file",
            "actions/upload-artifact": "the paths must exist"}


def _run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    assert done.returncode == 0, f"{command}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def checkout_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files of the checkout git knows (tracked, and new ones not ignored), elsewhere."""
    copy = tmp_path_factory.mktemp("checkout")
    listed = _run(["git", "-C", str(CHECKOUT), "ls-files", "-z", "--cached", "--others",
                   "--exclude-standard"]).stdout
    for name in filter(None, listed.split("\0")):
        source = CHECKOUT / name
        if source.is_file():  # a file deleted but not yet committed is listed too
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    return copy


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment that sees none of this interpreter's packages."""
    path = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(path)
    return path


def test_a_wheel_in_a_fresh_venv_lists_and_explains(checkout_copy: Path, fresh_venv: Path,
                                                    tmp_path: Path) -> None:
    """`lab list` and `lab explain failover` from a wheel, run far from any checkout, find the
    shipped scenarios in the installed package; its image inputs hash as the checkout's."""
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
          str(checkout_copy)])
    [wheel] = dist.glob("failover_lab-*.whl")
    _run([str(fresh_venv / "bin" / "pip"), "install", "-q", str(wheel)])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    listed = _run([str(fresh_venv / "bin" / "lab"), "list"], cwd=elsewhere).stdout
    assert [line.split()[0] for line in listed.splitlines() if line.strip()] == list(available())
    explained = _run([str(fresh_venv / "bin" / "lab"), "explain", "failover"], cwd=elsewhere,
                     env={**os.environ, "COLUMNS": "300"}).stdout
    source = explained.strip().splitlines()[-1]
    assert source.startswith(f"Source: {fresh_venv}/lib/")
    assert source.endswith("/site-packages/lab/shipped/scenarios/failover.yaml")
    assert "Kill backend-1" in explained
    script = ("import sys\nfrom lab.topology.images import ROLES, inputs_hash\n"
              "print(' '.join(inputs_hash(role, 'base') for role in ROLES))")
    hashes = _run([str(fresh_venv / "bin" / "python"), "-c", script], cwd=elsewhere).stdout
    assert hashes.split() == [inputs_hash(role, "base") for role in ROLES]


def test_the_ci_example_runs_as_written(checkout_copy: Path, fresh_venv: Path, engine: Engine,
                                        lab_images: dict[str, str]) -> None:
    """The workflow's run: steps, with its env, in a fresh venv and a copy of the checkout:
    the lab installs with pip, rehearses the suite, writes JUnit and the run directories the
    artifact step uploads, and removes the lab it started."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    [job] = workflow["jobs"].values()
    steps = job["steps"]
    assert {s["uses"].split("@")[0] for s in steps if "uses" in s} == set(EMULATED)
    name = session_lab_name("ci")
    # The one difference from a CI runner: this machine's other labs; the lab gets its own name.
    (checkout_copy / "lab.toml").write_text(f'name = "{name}"\n')
    env = {**os.environ, **job["env"], "PATH": f"{fresh_venv / 'bin'}:{os.environ['PATH']}",
           "VIRTUAL_ENV": str(fresh_venv)}
    for step in steps:
        if "run" in step:
            _run(["bash", "-e", "-c", step["run"]], cwd=checkout_copy, env=env, timeout=900)
    junit_step = next(s for s in steps if s.get("uses", "").startswith("mikepenz/"))
    suites = list(JUnitXml.fromfile(str(checkout_copy / junit_step["with"]["report_paths"])))
    assert [s.name for s in suites] == job["env"]["LAB_SUITE"].split()
    assert all(s.failures == 0 and s.errors == 0 and s.tests > 0 for s in suites)
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    for path in upload["with"]["path"].split():
        assert (checkout_copy / path).exists(), path
    for suite in suites:
        directory = Path({p.name: p.value for p in suite.properties()}["run_dir"])
        assert (checkout_copy / directory / "result.json").is_file()
        assert (checkout_copy / directory / "report.html").is_file()
    assert not engine.list_containers({LABEL_LAB: name})
