"""Rate limits one step off, on a real NGINX: a lab.toml whose auth zone is one burst looser
than the checklist's "10 r/s burst 5" runs exactly as configured (conformance passes) and
fails the rate_limits objective, as predicted before the first request; an NGINX that runs
burst 6 where burst 5 is claimed fails conformance."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_objective_controls import lab_toml, layers, run_json
from test_scenarios import CLAIMED, by_name, started

from lab.checks import Verdict
from lab.config import LabConfig
from lab.engine import Engine
from lab.scenarios.loader import load_scenario
from lab.scenarios.runner import Runner
from lab.topology.render import render_nginx
from tests.conftest import session_lab_name

# The worktree's own scenario file: by name, an editable install may serve another
# checkout's copy.
SCENARIO = str(Path(__file__).resolve().parents[2] / "scenarios" / "rate-limits.yaml")

BURST_6 = """\
# The checklist's limits, with the auth zone one burst looser than "10 r/s burst 5".
[[nginx.rate_limits]]
name = "auth"
location = "/api/auth/"
rate_per_s = 10
burst = 6

[[nginx.rate_limits]]
name = "api"
location = "/api/"
rate_per_s = 100

[[nginx.rate_limits]]
name = "webhook"
location = "/webhooks/"
rate_per_s = 50
"""


@pytest.mark.covers("objective:rate_limits")
def test_an_auth_zone_with_burst_6_conforms_and_fails_its_rate_limits_objective(
        engine: Engine, lab_images: dict[str, str], tmp_path: Path) -> None:
    """Auth at 10 r/s burst 6: NGINX does what its configuration says (every rate-limit check
    passes), which is one request more than the checklist's burst 5 allows; predicted."""
    config = lab_toml(tmp_path, BURST_6)
    code, document, stderr = run_json(SCENARIO, "--name", session_lab_name("auth-burst-6"),
                                      "--config", str(config), "--seed", "41",
                                      "--report-dir", str(tmp_path))
    judged = layers(document)
    assert code == 1, judged
    assert document["verdicts"] == {"conformance": "pass", "objectives": "fail"}, judged
    assert judged["rate-limit /api/auth/"] == ("pass", {"rate_limits": "fail"})
    assert judged["rate-limit /api/"] == ("pass", {"rate_limits": "pass"})
    assert judged["rate-limit /webhooks/"] == ("pass", {"rate_limits": "pass"})
    auth = next(c for c in document["checks"] if c["label"] == "rate-limit /api/auth/")
    objective = next(o for o in auth["objectives"] if o["name"] == "rate_limits")
    assert "burst 6 > 5" in objective["measured"], objective
    assert "rate_limits /api/auth/ <= 10 r/s burst 5" in stderr and "UNREACHABLE" in stderr


@pytest.mark.covers("check:rate-limit")
def test_an_nginx_one_burst_looser_than_claimed_fails_conformance(
        engine: Engine, lab_images: dict[str, str]) -> None:
    """NGINX running auth at burst 6 while burst 5 is claimed: its extra acceptances (the 12th
    of the 15 logins 50 ms apart, the 7th of a burst) are decisions no clock alternative of
    burst 5 explains; the other zones still pass."""
    conf = render_nginx(LabConfig()).replace("zone=auth burst=5", "zone=auth burst=6")
    assert "zone=auth burst=6 nodelay" in conf
    with started(engine, "auth-b6-run", nginx_conf=conf) as lab:
        result = by_name(Runner(lab, load_scenario(SCENARIO), seed=42, claimed=CLAIMED).run())
    auth = result["rate-limit /api/auth/"]
    assert auth.verdict is Verdict.FAIL, auth
    assert auth.value("unexplained") and "NGINX PASSED, the model REJECTED" in "\n".join(
        auth.details), auth.details
    assert result["rate-limit /api/"].verdict is Verdict.PASS, result["rate-limit /api/"]
    assert result["rate-limit /webhooks/"].verdict is Verdict.PASS, result["rate-limit /webhooks/"]
