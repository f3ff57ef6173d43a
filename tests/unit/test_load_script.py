"""The k6 script a plan becomes (pure text), and k6 reading it (k6 inspect, no lab)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from lab.load.k6 import find_k6
from lab.load.profiles import build_plan
from lab.load.script import k6_options, render_script
from lab.load.thresholds import LoadThresholds


def _options(script: str) -> dict:
    match = re.search(r"export const options = (\{.*?\n\});", script, re.DOTALL)
    assert match, "options block"
    return json.loads(match.group(1))


def test_one_arrival_rate_scenario_per_kind() -> None:
    """Each request kind is a ramping-arrival-rate scenario with its own exec function."""
    plan = build_plan("conversation", {"rate": 100}, LoadThresholds())
    options = _options(render_script(plan))
    assert set(options["scenarios"]) == {"reads", "writes", "logins"}
    reads = options["scenarios"]["reads"]
    assert reads["executor"] == "ramping-arrival-rate" and reads["exec"] == "reads"
    assert reads["timeUnit"] == "1m" and reads["stages"][-1]["target"] == 80 * 60
    assert options["thresholds"]["http_req_duration{scenario:logins}"] == ["p(95)<1000"]
    assert options == k6_options(plan)


def test_script_tags_each_request_with_its_iteration() -> None:
    """Each request carries its iteration as metadata and as X-Request-Id (for NGINX's log)."""
    script = render_script(build_plan("smoke", {}, LoadThresholds()))
    assert "meta.i = String(exec.scenario.iterationInTest)" in script
    assert "meta.s = String(exec.scenario.startTime)" in script
    assert "'X-Request-Id': id" in script and "delete meta.i" in script
    assert "new Trend" not in script and "res.headers" not in script
    assert "export function main()" in script and "LAB_USERS names no user" not in script


def test_api_kinds_need_users_and_send_tokens() -> None:
    """Kinds with a token or a body refuse to run without the lab's users."""
    script = render_script(build_plan("conversation", {}, LoadThresholds()))
    assert "LAB_USERS names no user" in script
    assert "Authorization: 'Bearer ' + u.token" in script
    assert "JSON.stringify({email: u.email, password: PASSWORD})" in script


@pytest.mark.parametrize(
    "profile", ["smoke", "load", "stress", "spike", "soak", "breakpoint", "conversation"]
)
def test_k6_accepts_every_profile_script(profile: str, tmp_path) -> None:
    """k6 itself parses each script's options (``k6 inspect``; no request is sent)."""
    k6 = find_k6()
    path = tmp_path / "script.js"
    path.write_text(render_script(build_plan(profile, {}, LoadThresholds(abort_on_fail=True))))
    users = json.dumps([{"email": "a", "token": "t", "conversation_id": 1}])
    done = subprocess.run(
        [
            str(k6.path),
            "inspect",
            "--execution-requirements",
            "-e",
            f"LAB_USERS={users}",
            "-e",
            "LAB_BASE_URL=http://127.0.0.1:9",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"K6_NO_USAGE_REPORT": "true", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    inspected = json.loads(done.stdout)
    kinds = build_plan(profile, {}, LoadThresholds()).kinds
    assert set(inspected["scenarios"]) == {k.name for k in kinds}
