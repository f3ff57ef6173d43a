"""``lab lint``: every rule finds its pitfall in a deliberately bad configuration, none fires on
a clean one, and the command's exit codes and JSON follow the findings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lab.cli.app import app
from lab.config import LabConfig, RateLimitZone, load_config
from lab.lint import RULES, Level, for_checks, lint, traffic_of
from lab.objectives import Objectives, load_objectives
from lab.scenarios.loader import load_scenario

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "checklist"
# This checkout's failover file, read by path: the arithmetic is judged at its traffic.
FAILOVER_FILE = str(ROOT / "scenarios" / "failover.yaml")
FAILOVER = traffic_of(load_scenario(FAILOVER_FILE))
runner = CliRunner()

CLEAN = LabConfig().with_overrides(
    "nginx", next_upstream=("error", "timeout", "http_502", "http_504"),
    rate_limits=(RateLimitZone(name="auth", location="/api/auth/", rate_per_s=10, burst=5),
                 RateLimitZone(name="api", location="/api/", rate_per_s=100, burst=20),
                 RateLimitZone(name="webhook", location="/webhooks/", rate_per_s=50, burst=10)),
).with_overrides("redis", persistence=True)

BAD_CONF = """\
limit_req_zone $server_name zone=shared:10m rate=10r/s;
limit_req_zone $binary_remote_addr zone=api:10m rate=100r/s;

upstream app {
    server app-1.internal:3000 max_fails=1 fail_timeout=40s;
    server app-2.internal:3000 max_fails=1 fail_timeout=40s;
    server app-3.internal:3000 max_fails=1 fail_timeout=40s;
    keepalive 16;
    check interval=10000 rise=2 fall=5 timeout=1000 type=http;
    check_http_send "GET /health HTTP/1.0\\r\\n\\r\\n";
}

upstream counted {
    server app-1.internal:3000 max_fails=2 fail_timeout=40s;
}

server {
    listen 80;
    proxy_next_upstream error timeout http_503;
    location /api/ {
        limit_req zone=api;
        proxy_pass http://app;
        proxy_next_upstream error timeout non_idempotent;
        proxy_connect_timeout 500ms;
    }
    location /api/auth/ {
        limit_req zone=shared burst=5 nodelay;
        proxy_pass http://app;
        proxy_next_upstream_tries 1;
    }
    location /webhooks/ { proxy_pass http://app; proxy_next_upstream http_502; }
    location /static/ {
        proxy_pass http://app;
        proxy_connect_timeout 1s;
        proxy_next_upstream_timeout 1s;
    }
    location /health/ { proxy_pass http://app; }
    location /single/ { proxy_pass http://counted; }
    location / { proxy_pass http://app; }
    location /status { check_status; }
}
"""


def _bad(tmp_path: Path, conf: str = BAD_CONF) -> Path:
    (tmp_path / "bad.conf").write_text(conf)
    (tmp_path / "lab.toml").write_text("""\
[nginx]
conf = "bad.conf"

[pgbouncer]
default_pool_size = 120

[postgres]
max_connections = 100

[backend]
lock_ttl_s = 1
job_duration_s = 3
lock_renewal = false

[objectives]
readmission = "20s"
""")
    return tmp_path / "lab.toml"


def test_clean_configuration_is_silent() -> None:
    """A configuration without the pitfalls gives no finding."""
    report = lint(CLEAN, Objectives(), FAILOVER)
    assert report.findings == (), [f.rule for f in report.findings]


def test_every_rule_fires_on_the_bad_configuration(tmp_path: Path) -> None:
    """The deliberately bad files and lab.toml trip every registered rule (no-ejection with
    max_fails=0, which silences the rules about counting failures; ejection-window needs a
    slower rate than failover's, test_lint_failover.py)."""
    path = _bad(tmp_path)
    report = lint(load_config(path), load_objectives(path).values, FAILOVER)
    fired = {f.rule for f in report.findings}
    assert fired == set(RULES.names()) - {"no-ejection", "ejection-window"}, fired
    for finding in report.findings:
        assert finding.arithmetic and finding.consequence and finding.fix
        assert finding.where
    shared = next(f for f in report.findings if f.rule == "shared-limit-key")
    assert shared.where.endswith("bad.conf:1") and "'$server_name'" in shared.arithmetic
    path = _bad(tmp_path, BAD_CONF.replace("max_fails=1", "max_fails=0"))
    report = lint(load_config(path), load_objectives(path).values, FAILOVER)
    (never,) = [f for f in report.findings if f.rule == "no-ejection"]
    assert never.where.endswith("bad.conf:5") and "max_fails=0" in never.arithmetic


@pytest.mark.parametrize(("section", "values", "rule", "level"), [
    ("nginx", {"max_fails": 0}, "no-ejection", Level.ERROR),
    ("nginx", {"fail_timeout_s": 40}, "readmission-window", Level.ERROR),
    ("nginx", {"connect_timeout_s": 8.0}, "failing-latency", Level.ERROR),
    ("nginx", {"read_timeout_s": 8.0}, "failing-latency", Level.ERROR),
    ("nginx", {"next_upstream": ("http_502",)}, "no-retry", Level.ERROR),
    ("nginx", {"next_upstream": ("error", "timeout", "non_idempotent")}, "retried-writes",
     Level.WARNING),
    ("nginx", {"connect_timeout_s": 0.5}, "timeout-below-backend-latency", Level.WARNING),
    ("nginx", {"read_timeout_s": 1.5}, "timeout-below-backend-latency", Level.WARNING),
    ("nginx", {"zone": False, "worker_processes": 4}, "per-worker-counters", Level.WARNING),
    ("nginx", {"next_upstream": ("error", "timeout", "http_503")}, "health-503-ejects",
     Level.ERROR),
    ("nginx", {"rate_limits": (RateLimitZone(name="api", location="/api/", rate_per_s=100),)},
     "limit-req-no-burst", Level.WARNING),
    ("pgbouncer", {"default_pool_size": 98}, "pool-exceeds-max-connections", Level.ERROR),
    ("backend", {"lock_ttl_s": 1.0, "job_duration_s": 2.0, "lock_renewal": False},
     "lock-ttl-shorter-than-job", Level.ERROR),
    ("redis", {"persistence": False}, "redis-no-persistence", Level.WARNING),
])
def test_each_pitfall_alone(section: str, values: dict, rule: str, level: Level) -> None:
    """One pitfall added to the clean configuration gives that rule's finding, and only it."""
    report = lint(CLEAN.with_overrides(section, **values), Objectives(), FAILOVER)
    assert [(f.rule, f.level) for f in report.findings] == [(rule, level)], report.findings


def test_per_worker_counters_arithmetic() -> None:
    """The per-worker finding multiplies max_fails by the workers."""
    report = lint(CLEAN.with_overrides("nginx", zone=False, worker_processes=4), Objectives(),
                  FAILOVER)
    (finding,) = report.findings
    assert "4 x max_fails 3 = 12" in finding.arithmetic


def test_readmission_follows_the_objective() -> None:
    """fail_timeout 10 s passes a 30 s objective and fails a 10 s one (10 + 1 > 10)."""
    assert lint(CLEAN, Objectives(readmission=30), FAILOVER).findings == ()
    (finding,) = lint(CLEAN, Objectives(readmission=10), FAILOVER).findings
    assert finding.rule == "readmission-window"
    assert "11 s > objective readmission 10 s" in finding.arithmetic


def test_checklist_claims_open_source_nginx_cannot_meet() -> None:
    """The checklist's active checks: the claim's arithmetic and what runs instead, with lines."""
    path = EXAMPLES / "claimed" / "lab.toml"
    report = lint(load_config(path), load_objectives(path).values, FAILOVER)
    active = [f for f in report.findings if f.rule == "active-health-checks"]
    assert len(active) == 2
    assert active[0].where.endswith("active-checks.conf:12")
    assert "5 x 10 s = 50 s" in active[0].arithmetic
    # Its file sets no timeout: NGINX's 60 s connect outlasts the clients' 10 s.
    assert "a killed backend's failures are not counted" in active[0].arithmetic
    assert "check_status" in active[1].arithmetic


def test_findings_for_a_scenario() -> None:
    """lab run shows only the findings that concern the scenario's checks."""
    report = lint(LabConfig(), Objectives(), FAILOVER)
    assert {f.rule for f in for_checks(report, ["rate-limit"])} == {"limit-req-no-burst"}
    assert {f.rule for f in for_checks(report, ["lock-exclusivity"])} == {"redis-no-persistence"}
    assert for_checks(report, ["tls"]) == []


def test_cli_exit_codes_and_json(tmp_path: Path) -> None:
    """Exit 0 on a clean file, 1 with errors (JSON lists them), 2 on a missing file."""
    clean = tmp_path / "clean.toml"
    clean.write_text('[nginx]\nnext_upstream = ["error", "timeout"]\n'
                     '[redis]\npersistence = true\n'
                     '[[nginx.rate_limits]]\nname = "api"\nlocation = "/api/"\nrate_per_s = 100\n'
                     'burst = 20\n')
    result = runner.invoke(app, ["lint", "--config", str(clean), "--scenario", FAILOVER_FILE])
    assert result.exit_code == 0, result.output
    assert "nothing found" in result.output
    result = runner.invoke(app, ["lint", "--config", str(_bad(tmp_path)), "--json",
                                 "--scenario", FAILOVER_FILE])
    assert result.exit_code == 1, result.output
    document = json.loads(result.output)
    assert document["schema"] == 1 and document["errors"] >= 1
    assert {"rule", "level", "where", "arithmetic", "consequence", "fix"} <= set(
        document["findings"][0])
    result = runner.invoke(app, ["lint", "--config", str(tmp_path / "missing.toml")])
    assert result.exit_code == 2
    assert "no such configuration file" in result.output
