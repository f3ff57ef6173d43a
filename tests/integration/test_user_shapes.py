"""The NGINX shapes public configurations have, run for real: a checklist-style site whose
port 80 only redirects to HTTPS, whose TLS name is only in the file and whose backends are IP
addresses (examples/checklist-redirect, with a lab.toml of one line) comes up and rehearses
failover, rate-limits and security; a redirect the lab cannot read fails readiness with one
sentence, a hint and a few log lines, and leaves nothing behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lab.cli.app import app
from lab.config import load_config
from lab.engine import LABEL_LAB, Engine
from lab.errors import NodeStartError
from lab.topology.lab import Lab
from tests.conftest import session_lab_name
from tests.scenario_files import failover_first_round

SITE = Path(__file__).resolve().parents[2] / "examples" / "checklist-redirect"
runner = CliRunner()


def _nothing_left(engine: Engine, name: str) -> None:
    assert engine.list_containers({LABEL_LAB: name}) == []
    assert not engine.network_exists(f"lab-{name}")


def test_checklist_redirect_site_rehearses(engine: Engine, lab_images: dict[str, str],
                                           tmp_path: Path) -> None:
    """`lab run failover rate-limits security` on the site runs to a result: failover and
    rate-limits conform (the clients reach the HTTPS server as api.example.com, NGINX's
    access log names backend-1..3 for the IP addresses), the certificate is for the file's
    name, and every check passes on both layers."""
    name = session_lab_name("shapes")
    # failover's first round: its crash loop's second round waits out the same timers again.
    once = failover_first_round(tmp_path)
    reports = tmp_path / "reports"
    result = runner.invoke(app, ["run", str(once), "rate-limits", "security", "--config",
                                 str(SITE / "lab.toml"), "--name", name, "--seed", "7",
                                 "--report-dir", str(reports)])
    assert result.exit_code == 0, result.output
    documents = {d["scenario"]: d for d in (json.loads(path.read_text())
                                            for path in reports.glob("*/result.json"))}
    assert set(documents) == {"failover-once", "rate-limits", "security"}, result.output
    verdicts = {(scenario, check["name"]): check["verdict"]
                for scenario, document in documents.items() for check in document["checks"]}
    # Every check passes on both layers: a correct NGINX, a correct site.
    assert {key: verdict for key, verdict in verdicts.items() if verdict != "pass"} == {}, \
        verdicts
    failover = documents["failover-once"]
    assert failover["expectations"]["nginx"].startswith("what NGINX loaded")
    tls = next(c for c in documents["security"]["checks"] if c["name"] == "tls")
    assert "api.example.com" in tls["measured"]
    _nothing_left(engine, name)


def test_an_unread_redirect_fails_readiness_in_one_sentence(engine: Engine,
                                                            lab_images: dict[str, str],
                                                            tmp_path: Path) -> None:
    """A redirect written through a map (the lab cannot read it): NGINX's readiness fails
    with what was asked, what came back and where it points, the hint, and at most a few
    distinct log lines (the access log summarised); nothing is left running."""
    site = tmp_path / "site"
    shutil.copytree(SITE, site)
    conf = site / "backend.conf"
    conf.write_text(conf.read_text().replace(
        "upstream backend_servers {",
        'map $scheme $to_https {\n    http "https://$host$request_uri";\n    default "";\n}\n'
        "upstream backend_servers {").replace(
        "    return 301 https://$host$request_uri;",
        "    if ($to_https) {\n        return 301 $to_https;\n    }\n"
        "    location / {\n        proxy_pass http://backend_servers;\n    }"))
    config = load_config(site / "lab.toml").with_name(session_lab_name("unread-redirect"))
    lab = Lab(engine, config)
    with pytest.raises(NodeStartError) as caught:
        lab.up(ready_timeout_s=15)
    error = caught.value
    assert error.message.startswith("nginx did not become ready (running): asked GET "
                                    "/health/ready at http://127.0.0.1:")
    assert error.message.endswith("answered 301 Moved Permanently, Location: "
                                  "https://127.0.0.1/health/ready")
    assert error.hint is not None and "return 301 https://" in error.hint
    assert error.details is not None
    lines = error.details.splitlines()[1:]
    assert 1 <= len(lines) <= 7, error.details
    assert "access log: GET /health/ready -> 301" in error.details
    _nothing_left(engine, config.name)
