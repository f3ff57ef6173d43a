"""`lab run failover` on configurations other people wrote (tests/corpus/), as they wrote them:
each runs, and conformance passes on every check (NGINX did what its file says); objectives may
fail, which is the point of a bad configuration. bench/corpus.py runs the whole corpus, both of
failover's rounds; CI runs six shapes through its first round (one kill, one ejection, one
re-admission): a redirect to HTTPS with IP-address upstreams, a single server and a generated
dhparam (zammad-ssl); NGINX's defaults on two ports of one host (max_fails=1, whose failures
lower round robin's effective weight: flask-pair); included files, upstream keepalive and
several upstream blocks (superset); least_conn (vllm-least-conn); hash on the client address,
consistent, with four workers counting alone (socketio-hash); ip_hash with a down server
(nginx-org-ip-hash-down)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lab.cli.app import app
from lab.engine import Engine
from lab.topology.lab import LABEL_LAB
from tests.conftest import session_lab_name
from tests.corpus import entries
from tests.scenario_files import failover_first_round

CONFIGS = ("zammad-ssl", "flask-pair", "superset", "vllm-least-conn", "socketio-hash",
           "nginx-org-ip-hash-down")
BY_NAME = {e.name: e for e in entries()}
runner = CliRunner()


@pytest.mark.parametrize("name", CONFIGS)
def test_a_real_configuration_rehearses_failover(name: str, engine: Engine,
                                                 lab_images: dict[str, str],
                                                 tmp_path: Path) -> None:
    """The configuration runs failover to a result, every check conforming, every prediction
    with a range holding, nothing left."""
    entry = BY_NAME[name]
    assert entry.lab is not None and not entry.refused
    lab_name = session_lab_name(f"c{CONFIGS.index(name)}")
    once = failover_first_round(tmp_path)
    result = runner.invoke(app, ["run", str(once), "--config", str(entry.lab), "--name",
                                 lab_name, "--seed", "11", "--report-dir", str(tmp_path)])
    assert result.exit_code in (0, 1), result.output
    (path,) = tmp_path.glob("*/result.json")
    assert "failover-once" in path.parent.name
    document = json.loads(path.read_text())
    # A miss names the check, what it measured and its first findings: CI keeps no report.
    missed = {c["label"] or c["name"]: (c["conformance"], c["measured"], c["details"])
              for c in document["checks"] if c["conformance"] != "pass"}
    assert not missed, json.dumps(missed, indent=1)
    # Each prediction with a range held against the run (the lab's model of this file).
    wrong = [p for p in document["predictions"] if p["held"] is False]
    assert not wrong, json.dumps(wrong, indent=1)
    assert engine.list_containers({LABEL_LAB: lab_name}) == []
