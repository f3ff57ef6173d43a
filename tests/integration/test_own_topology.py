"""Rehearsing your own topology for real: the checklist's files (examples/checklist: its
backend.conf, pgbouncer.ini and a small Node backend) run failover, lock-exclusivity,
rate-limits and redis-outage; the expectations follow the user's file as NGINX loaded it; and
bad input is one message, exit 2, nothing left running."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lab.checks import Verdict
from lab.cli.app import app
from lab.config import load_config
from lab.engine import LABEL_LAB, Engine
from lab.scenarios.loader import load_scenario
from lab.scenarios.runner import Runner
from lab.topology.expect import running
from lab.topology.lab import Lab
from tests.conftest import session_lab_name
from tests.scenario_files import failover_first_round

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "checklist"
runner = CliRunner()


@pytest.fixture(scope="module")
def checklist_lab(engine: Engine, lab_images: dict[str, str]) -> Iterator[Lab]:
    """The checklist's own files, running."""
    config = load_config(EXAMPLES / "lab.toml").with_name(session_lab_name("checklist"))
    lab = Lab(engine, config)
    try:
        lab.up(ephemeral=True)
        yield lab
    finally:
        lab.down()


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of examples/checklist to edit."""
    target = tmp_path / "checklist"
    shutil.copytree(EXAMPLES, target)
    return target


@pytest.mark.parametrize("name", ["failover", "lock-exclusivity", "rate-limits", "redis-outage"])
def test_checklist_files_rehearse(checklist_lab: Lab, name: str, tmp_path: Path) -> None:
    """Each scenario's checks pass (conformance) against the checklist's own files, judged
    against what NGINX loaded from them and what the backend's log lines and Redis show."""
    # failover's first round: the second waits out the same timers again.
    scenario = str(failover_first_round(tmp_path)) if name == "failover" else name
    result = Runner(checklist_lab, load_scenario(scenario), seed=7).run()
    failed = [f"{c.shown}: {c.verdict.value}: {c.measured} (expected {c.expected}) "
              f"{list(c.details[:5])}" for c in result.checks if c.verdict is not Verdict.PASS]
    assert not failed, "\n".join(failed)
    sources = dict(result.expectations)
    assert "nginx -T" in sources["nginx"]
    assert "contract" in sources["backend"]
    if name in ("lock-exclusivity", "redis-outage"):
        assert result.history.job_runs and {r.node for r in result.history.job_runs} <= set(
            checklist_lab.config.backend_names)
        assert result.history.lock_samples


def test_running_expectations_follow_the_users_file(engine: Engine, lab_images: dict[str, str],
                                                    example: Path) -> None:
    """max_fails=2 fail_timeout=4s in the user's file is what the running lab's expectations
    say (read with nginx -T), whatever lab.toml's [nginx] values are."""
    conf = example / "backend.conf"
    conf.write_text(conf.read_text().replace("max_fails=3 fail_timeout=10s",
                                             "max_fails=2 fail_timeout=4s"))
    toml = example / "lab.toml"
    toml.write_text(toml.read_text().replace("[nginx]\n", "[nginx]\nmax_fails = 7\n"))
    config = load_config(toml).with_name(session_lab_name("own-file"))
    lab = Lab(engine, config)
    try:
        lab.up(ephemeral=True)
        upstream = running(lab).upstream
        assert (upstream.max_fails, upstream.fail_timeout_s) == (2, 4.0)
        assert upstream.servers == ("backend-1", "backend-2", "backend-3")
        dump = lab.nginx_conf()
        assert "# configuration file /etc/lab/conf/backend.conf:" in dump
        assert "max_fails=2 fail_timeout=4s" in dump
        pool = running(lab).pgbouncer
        assert (pool.default_pool_size, pool.reserve_pool_size) == (30, 5)   # SHOW CONFIG
    finally:
        lab.down()


def _nothing_left(engine: Engine, name: str) -> None:
    assert engine.list_containers({LABEL_LAB: name}) == []
    assert not engine.network_exists(f"lab-{name}")


def test_config_nginx_rejects_is_refused_before_start(engine: Engine, lab_images: dict[str, str],
                                                      example: Path) -> None:
    """A directive of a module the image lacks: NGINX's own words, the user's file and line,
    exit 2, and no node was ever created."""
    conf = example / "backend.conf"
    lines = conf.read_text().split("\n")
    number = next(i for i, line in enumerate(lines) if "client_max_body_size" in line)
    lines[number] += ' more_set_headers "Server: api";'
    conf.write_text("\n".join(lines))
    name = session_lab_name("rejected")
    result = runner.invoke(app, ["up", "--config", str(example / "lab.toml"), "--name", name])
    assert result.exit_code == 2, result.output
    assert "NginxRejected" in result.output
    assert f'unknown directive "more_set_headers" in {conf}:{number + 1}' in result.output
    assert "Traceback" not in result.output
    _nothing_left(engine, name)


def test_backend_that_never_answers(engine: Engine, lab_images: dict[str, str],
                                    example: Path) -> None:
    """A backend whose health endpoint never answers 200: one message naming the node and
    the answer, exit 2, nothing left running. The timeout leaves a loaded machine time to
    start Node and listen, so the answer (404) is what times out, not the start."""
    toml = example / "lab.toml"
    toml.write_text(toml.read_text().replace('job_runs = "logs"', 'job_runs = "logs"\n'
                                             'ready_timeout_s = 20\n'
                                             'health = { ready = "/never" }'))
    name = session_lab_name("never-ready")
    result = runner.invoke(app, ["up", "--config", str(toml), "--name", name])
    assert result.exit_code == 2, result.output
    assert "NodeStartError: backend-" in result.output and "did not become ready" in result.output
    assert "404" in result.output
    _nothing_left(engine, name)


def test_another_services_upstream_and_a_missing_file(engine: Engine, example: Path) -> None:
    """Another service's upstream block: NGINX starts with its servers pointed at a closed port
    (said on start); a missing file: exit 2 before anything starts."""
    conf = example / "backend.conf"
    conf.write_text(conf.read_text().replace(
        "upstream backend_servers {", "upstream auth_api {\n    server 10.1.2.3:9000;\n}\n"
        "upstream backend_servers {"))
    name = session_lab_name("unmappable")
    try:
        result = runner.invoke(app, ["up", "--config", str(example / "lab.toml"), "--name",
                                     name])
        assert result.exit_code == 0, result.output
        assert "upstream auth_api" in result.output and "another service" in result.output
    finally:
        runner.invoke(app, ["down", "--name", name])
    _nothing_left(engine, name)
    conf.unlink()
    result = runner.invoke(app, ["up", "--config", str(example / "lab.toml"), "--name", name])
    assert result.exit_code == 2, result.output
    assert "[nginx] conf" in result.output and "no such file" in result.output
    _nothing_left(engine, name)
