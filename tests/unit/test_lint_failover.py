"""``lab lint``'s failover rules: each fires on a small configuration with its arithmetic at the
scenario's rate, says only what that configuration does (no retry or ejection it never makes),
and stays silent on a correct one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lab.cli.app import app
from lab.config import LabConfig, RateLimitZone, load_config
from lab.lint import Assumptions, Stream, Traffic, default_traffic, lint, traffic_of
from lab.lint.rules import RULES, rule
from lab.objectives import Objectives
from lab.scenarios.loader import load_scenario

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "checklist"
FAILOVER_FILE = str(ROOT / "scenarios" / "failover.yaml")
runner = CliRunner()

NEW_RULES = {"no-retry", "single-try", "failures-not-counted", "ejection-window",
             "retried-writes", "retry-timeout-too-short", "keepalive-unused",
             "timeout-below-backend-latency"}

# Failover's shape, stated here so the arithmetic below does not move with the shipped file:
# 25 req/s over 3 backends = 8.33 req/s each; writes 5 req/s through /api/.
TRAFFIC = Traffic("failover-like", (Stream("reads", 20, "GET", "/health", 10.0),
                                    Stream("writes", 5, "POST", "/api/messages", 10.0)))

CLEAN = LabConfig().with_overrides(
    "nginx", next_upstream=("error", "timeout", "http_502", "http_504"),
    rate_limits=(RateLimitZone(name="auth", location="/api/auth/", rate_per_s=10, burst=5),
                 RateLimitZone(name="api", location="/api/", rate_per_s=100, burst=20),
                 RateLimitZone(name="webhook", location="/webhooks/", rate_per_s=50, burst=10)),
).with_overrides("redis", persistence=True)

UPSTREAM = """\
upstream app {{
    zone app 64k;
    server app-1.internal:3000 max_fails={max_fails} fail_timeout={fail_timeout};
    server app-2.internal:3000 max_fails={max_fails} fail_timeout={fail_timeout};
    server app-3.internal:3000 max_fails={max_fails} fail_timeout={fail_timeout};
{extra}}}
"""


def _conf(tmp_path: Path, server: str, *, max_fails: int = 3, fail_timeout: str = "10s",
          extra: str = "") -> tuple[LabConfig, str]:
    text = UPSTREAM.format(max_fails=max_fails, fail_timeout=fail_timeout, extra=extra) + server
    (tmp_path / "site.conf").write_text(text)
    (tmp_path / "lab.toml").write_text('[nginx]\nconf = "site.conf"\n[redis]\npersistence = true\n')
    return load_config(tmp_path / "lab.toml"), text


def _line(text: str, needle: str) -> str:
    """``site.conf:N`` of the first line holding ``needle``."""
    number = next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)
    return f"site.conf:{number}"


def _rules(findings) -> list[str]:
    return [f.rule for f in findings]


def _no_promised_retry(findings) -> None:
    for f in findings:
        assert "retried on the next backend" not in f.consequence, f
        assert "before its retry" not in f.consequence, f


ISSUE_SERVER = """\
server {
    listen 80;
    proxy_connect_timeout 60s;
    proxy_read_timeout 5s;
    proxy_next_upstream http_500 http_503;
    location / { proxy_pass http://app; }
}
"""


def test_the_issue_config_no_retry_and_failures_never_counted(tmp_path: Path) -> None:
    """http_500 http_503 only, max_fails=100 fail_timeout=1s, 60 s connect: no retry, each
    failure mode's client errors at the rate, the killed backend never ejected, and no text
    promises a retry."""
    config, text = _conf(tmp_path, ISSUE_SERVER, max_fails=100, fail_timeout="1s")
    report = lint(config, Objectives(), TRAFFIC)
    assert set(_rules(report.findings)) == {"no-retry", "failures-not-counted",
                                            "failing-latency", "health-503-ejects"}
    _no_promised_retry(report.findings)
    (no_retry,) = [f for f in report.findings if f.rule == "no-retry"]
    assert no_retry.where.endswith(_line(text, "location /"))
    assert (f"proxy_next_upstream http_500 http_503 ({tmp_path}/{_line(text, 'http_500')}) "
            "lacks error and timeout") in no_retry.arithmetic
    assert "8.33 req/s reach each backend" in no_retry.arithmetic
    # killed: the 60 s connect outlasts the client; frozen: 5 s read, 504s; refused: 502s.
    assert ("killed: each request routed to it waits until its client gives up at 10 s, "
            "before proxy_connect_timeout 60 s ends") in no_retry.consequence
    assert ("frozen: every request routed to it gets 504 after proxy_read_timeout 5 s: "
            "max_fails 100 + 5 s x 8.33 req/s = 141 requests in the 16.9 s before NGINX ejects "
            "it") in no_retry.consequence
    assert "gets 502 at once: max_fails 100 = 100 requests in the 11.9 s" in no_retry.consequence
    (lost,) = [f for f in report.findings if f.rule == "failures-not-counted"]
    assert "proxy_connect_timeout 60 s" in lost.arithmetic
    assert ">= the clients' timeout 10 s (scenario failover-like: reads, writes)" in lost.arithmetic
    assert ("1 in 3 of their requests (8.33 req/s at this rate, 500 a minute) waits 10 s and "
            "fails") in lost.consequence
    assert "killed: not ejected (" in lost.consequence
    assert "no route to host" in lost.consequence         # until the address expires
    assert "231 of 231" in lost.consequence       # the measured figure
    (slow,) = [f for f in report.findings if f.rule == "failing-latency"]
    assert "waits until its client gives up at 10 s" in slow.consequence


def test_single_try(tmp_path: Path) -> None:
    """proxy_next_upstream_tries 1: the failures are answered, with each mode's count."""
    config, text = _conf(tmp_path, """\
server {
    listen 80;
    proxy_connect_timeout 1s;
    proxy_read_timeout 5s;
    proxy_next_upstream error timeout;
    proxy_next_upstream_tries 1;
    location / { proxy_pass http://app; }
}
""")
    (finding,) = lint(config, Objectives(), TRAFFIC).findings
    assert finding.rule == "single-try"
    assert f"proxy_next_upstream_tries 1 ({tmp_path}/{_line(text, 'tries 1')})" in \
        finding.arithmetic
    assert ("killed: every request routed to it gets 504 after proxy_connect_timeout 1 s: "
            "max_fails 3 + 1 s x 8.33 req/s = 11 requests in the 1.24 s before NGINX ejects it; "
            "then one more every 11-12 s") in finding.consequence
    assert "max_fails 3 + 5 s x 8.33 req/s = 44 requests in the 5.24 s" in finding.consequence
    assert "max_fails 3 = 3 requests in the 0.24 s" in finding.consequence
    _no_promised_retry([finding])


def test_a_location_with_its_own_retries(tmp_path: Path) -> None:
    """/api/ turns retries off while / keeps them: one finding, at /api/'s line, counting the
    share of the errors its own traffic sees."""
    config, text = _conf(tmp_path, """\
server {
    listen 80;
    proxy_connect_timeout 1s;
    proxy_read_timeout 5s;
    location /api/ {
        proxy_pass http://app;
        proxy_next_upstream off;
    }
    location / { proxy_pass http://app; }
}
""")
    (finding,) = lint(config, Objectives(), TRAFFIC).findings
    assert finding.rule == "no-retry"
    assert finding.where.endswith(_line(text, "location /api/"))
    assert finding.arithmetic.startswith("location /api/: proxy_next_upstream off (")
    assert ("max_fails 3 + 1 s x 8.33 req/s = 11 requests in the 1.24 s before NGINX ejects "
            "it; 2.2 of them through these locations (5 of 25 req/s)") in finding.consequence


def test_failures_counted_at_another_location_still_eject(tmp_path: Path) -> None:
    """Counters belong to the server: / never counts its killed tries (60 s connect), but
    /api/'s 2 s connects do, and eject the backend for every location."""
    config, _ = _conf(tmp_path, """\
server {
    listen 80;
    proxy_connect_timeout 60s;
    proxy_read_timeout 5s;
    location /api/ { proxy_pass http://app; proxy_connect_timeout 2s; }
    location / { proxy_pass http://app; }
}
""")
    report = lint(config, Objectives(), TRAFFIC)
    (lost,) = [f for f in report.findings if f.rule == "failures-not-counted"]
    assert lost.arithmetic.startswith("location /: proxy_connect_timeout 60 s")
    assert ("killed: ejected only by the failures counted from other locations' tries: the "
            "count grows only with the 1.67 req/s of it whose tries end before their clients "
            "give up: 2 s + (3 - 1) / 1.67 = 3.2 s before NGINX ejects it, by when 27 requests "
            "have gone to it") in lost.consequence


def test_abandoned_tries_reset_a_sparse_count(tmp_path: Path) -> None:
    """Counted failures further apart than fail_timeout, with abandoned tries between them:
    the count may never reach max_fails."""
    config, _ = _conf(tmp_path, """\
server {
    listen 80;
    proxy_connect_timeout 60s;
    proxy_read_timeout 5s;
    location /api/ { proxy_pass http://app; proxy_connect_timeout 2s; }
    location / { proxy_pass http://app; }
}
""", fail_timeout="1s")
    traffic = Traffic("sparse", (Stream("reads", 20, "GET", "/health", 10.0),
                                 Stream("writes", 1.5, "POST", "/api/messages", 10.0)))
    (lost,) = [f for f in lint(config, Objectives(), traffic).findings
               if f.rule == "failures-not-counted"]
    assert ("its counted failures come 2 s apart, more than fail_timeout 1 s, and a try whose "
            "client gave up in between resets the count, so max_fails 3 may never be reached"
            ) in lost.consequence


SLOW = Traffic("slow", (Stream("reads", 1, "GET", "/health", 10.0),))


def test_ejection_window_at_a_slow_rate() -> None:
    """max_fails 20 at 1 req/s (one try every 3 s per backend) is reached after the ejection
    objective; max_fails 3 is not."""
    assert lint(CLEAN, Objectives(), SLOW).findings == ()
    config = CLEAN.with_overrides("nginx", max_fails=20)
    (finding,) = lint(config, Objectives(), SLOW).findings
    assert finding.rule == "ejection-window"
    assert ("killed: max_fails 20 + 1 s x 0.333 req/s = 20 requests in the 58 s before NGINX "
            "ejects it") in finding.arithmetic
    assert "> objective ejection 50 s" in finding.arithmetic
    assert finding.fix.startswith("max_fails=17 or less")


def test_ejection_shorter_than_one_turn() -> None:
    """fail_timeout 1 s when a backend's turn comes every 3 s: ejection removes no request."""
    (finding,) = lint(CLEAN.with_overrides("nginx", fail_timeout_s=1), Objectives(),
                      SLOW).findings
    assert finding.rule == "ejection-window"
    assert "a backend is offered a request every 3 s > fail_timeout 1 s + 1 s" in \
        finding.arithmetic


def test_retry_timeout_no_longer_than_one_try(tmp_path: Path) -> None:
    """proxy_next_upstream_timeout 1s with a 1 s connect and a 5 s read: neither a killed nor a
    frozen backend's requests are retried; 10 s is long enough for both."""
    server = """\
server {{
    listen 80;
    proxy_connect_timeout 1s;
    proxy_read_timeout 5s;
    proxy_next_upstream_timeout {limit};
    location / {{ proxy_pass http://app; }}
}}
"""
    config, text = _conf(tmp_path, server.format(limit="1s"))
    (finding,) = lint(config, Objectives(), TRAFFIC).findings
    assert finding.rule == "retry-timeout-too-short"
    assert (f"proxy_next_upstream_timeout 1 s ({tmp_path}/"
            f"{_line(text, 'proxy_next_upstream_timeout')}) <= proxy_connect_timeout 1 s "
            "(killed) and proxy_read_timeout 5 s (frozen)") in finding.arithmetic
    assert "gets 504 after proxy_connect_timeout 1 s: max_fails 3 + 1 s x 8.33 req/s = 11" in \
        finding.consequence
    _no_promised_retry([finding])
    config, _ = _conf(tmp_path, server.format(limit="10s"))
    assert lint(config, Objectives(), TRAFFIC).findings == ()


def test_retried_writes_only_while_the_traffic_writes() -> None:
    """non_idempotent with writes through the location: duplicates counted at the rate; with
    reads only: nothing to say."""
    config = CLEAN.with_overrides("nginx", next_upstream=("error", "timeout", "non_idempotent"))
    (finding,) = lint(config, Objectives(), TRAFFIC).findings
    assert finding.rule == "retried-writes"
    assert "writes 5 req/s there (writes: POST /api/messages)" in finding.arithmetic
    assert "About 1.67 writes/s x 5.24 s = 8.73 writes are sent twice" in finding.consequence
    reads = Traffic("reads", (Stream("reads", 20, "GET", "/health", 10.0),))
    assert lint(config, Objectives(), reads).findings == ()


@pytest.mark.parametrize(("settings", "said"), [
    ("", "proxy_http_version 1.0 (not set: NGINX's default)"),
    ("proxy_http_version 1.1;", "Connection: close (NGINX's default"),
    ('proxy_http_version 1.1; proxy_set_header Connection "close";',
     "proxy_set_header Connection 'close'"),
])
def test_keepalive_unused(tmp_path: Path, settings: str, said: str) -> None:
    """keepalive without HTTP/1.1 and an empty Connection header keeps nothing."""
    config, _ = _conf(tmp_path, f"""\
server {{
    listen 80;
    proxy_connect_timeout 1s;
    proxy_read_timeout 5s;
    {settings}
    location / {{ proxy_pass http://app; }}
}}
""", extra="    keepalive 16;\n")
    (finding,) = lint(config, Objectives(), TRAFFIC).findings
    assert finding.rule == "keepalive-unused"
    assert said in finding.arithmetic and "keepalive 16 (" in finding.arithmetic
    assert "25 connects/s to the pool" in finding.consequence


def test_keepalive_used(tmp_path: Path) -> None:
    """HTTP/1.1 and an empty Connection header: the cache is used, nothing to say."""
    config, _ = _conf(tmp_path, """\
server {
    listen 80;
    proxy_connect_timeout 1s;
    proxy_read_timeout 5s;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    location / { proxy_pass http://app; }
}
""", extra="    keepalive 16;\n")
    assert lint(config, Objectives(), TRAFFIC).findings == ()


def test_timeouts_below_what_a_loaded_backend_needs() -> None:
    """A read timeout under the stated healthy latency (or the backend's database budget), a
    connect timeout under the SYN retransmission: each with its share at the rate."""
    assert lint(CLEAN, Objectives(), TRAFFIC).findings == ()
    (finding,) = lint(CLEAN, Objectives(), TRAFFIC, Assumptions(backend_latency_s=6)).findings
    assert finding.rule == "timeout-below-backend-latency"
    assert "proxy_read_timeout 5 s (nginx.conf:" in finding.arithmetic
    assert "< 6 s, --backend-latency" in finding.arithmetic
    assert "3 of the 83 requests it gets in fail_timeout 10 s, 3.6%" in finding.consequence
    assert finding.fix.startswith("proxy_read_timeout 12s")
    (finding,) = lint(CLEAN.with_overrides("nginx", read_timeout_s=1.5), Objectives(),
                      TRAFFIC).findings
    assert "< 2 s, the backend's database budget" in finding.arithmetic


def test_no_ejection_says_no_retry_when_there_is_none() -> None:
    """max_fails=0 without timeout in proxy_next_upstream: no text promises a retry."""
    config = CLEAN.with_overrides("nginx", max_fails=0, next_upstream=("error",))
    report = lint(config, Objectives(), TRAFFIC)
    assert set(_rules(report.findings)) == {"no-ejection", "no-retry"}
    _no_promised_retry(report.findings)
    (never,) = [f for f in report.findings if f.rule == "no-ejection"]
    assert ("killed: each gets 504 after proxy_connect_timeout 1 s (no retry: "
            "proxy_next_upstream error lacks timeout)") in never.consequence


@pytest.mark.parametrize("path", [None, EXAMPLES / "lab.toml"])
def test_correct_configurations_are_silent(path: Path | None) -> None:
    """The rendered default configuration and the checklist's backend.conf trip none of the
    failover rules at failover's own traffic."""
    config = load_config(path) if path else LabConfig()
    report = lint(config, Objectives(), traffic_of(load_scenario(FAILOVER_FILE)))
    assert not {f.rule for f in report.findings} & NEW_RULES, report.findings


def test_default_traffic_is_failovers() -> None:
    """Without a scenario the arithmetic uses failover's shipped streams."""
    assert default_traffic() == traffic_of(load_scenario("failover"))
    assert lint(CLEAN, Objectives()).traffic.scenario == "failover"


def test_concerns_must_name_checks() -> None:
    """A rule whose concerns name no registered check is refused when it registers."""
    with pytest.raises(TypeError, match="'no-such-check'"):
        rule("test-only-rule", "never registered", frozenset({"no-such-check"}))
    assert "test-only-rule" not in RULES


def test_cli_scenario_and_backend_latency(tmp_path: Path) -> None:
    """--scenario picks the traffic (JSON says which), --backend-latency the healthy answer
    time; an unknown scenario is bad input (exit 2)."""
    clean = tmp_path / "clean.toml"
    clean.write_text('[nginx]\nnext_upstream = ["error", "timeout"]\n'
                     '[redis]\npersistence = true\n'
                     '[[nginx.rate_limits]]\nname = "api"\nlocation = "/api/"\nrate_per_s = 100\n'
                     'burst = 20\n')
    distribution = str(ROOT / "scenarios" / "distribution.yaml")
    result = runner.invoke(app, ["lint", "--config", str(clean), "--scenario", distribution,
                                 "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["traffic"]["scenario"] == "distribution"
    result = runner.invoke(app, ["lint", "--config", str(clean), "--backend-latency", "6",
                                 "--scenario", FAILOVER_FILE])
    assert result.exit_code == 0, result.output
    assert "timeout-below-backend-latency" in result.output
    assert "traffic: scenario failover: reads 20 req/s GET /health" in result.output
    result = runner.invoke(app, ["lint", "--config", str(clean), "--scenario", "no-such"])
    assert result.exit_code == 2
    assert "no scenario named 'no-such'" in result.output
