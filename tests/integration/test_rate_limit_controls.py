"""The rate_limits objective as a user meets it: a lab.toml whose auth zone is one burst
looser than the checklist's "10 r/s burst 5" runs exactly as configured (conformance
passes) and fails the objective, as predicted before the first request."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_objective_controls import lab_toml, layers, run_json

from lab.engine import Engine
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
