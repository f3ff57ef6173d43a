"""`lab load` for real: k6 against a running lab, briefly and at low rates (heavy runs are
bench/loadgen.py's). Negative controls: thresholds tighter than the topology meets fail, a
starved generator is unknown (not slow), one client address meets the api zone's limit."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from lab.cli.app import app
from lab.config import LabConfig
from lab.engine import LABEL_LAB, LABEL_NODE, Engine
from lab.load.compare import before_lab
from lab.load.placement import BACKEND_DIRECT
from lab.load.profiles import build_plan
from lab.load.runner import LoadRunner
from lab.load.script import WRITE_MARKER
from lab.load.thresholds import LoadThresholds
from lab.topology.lab import Lab
from tests.conftest import session_lab_name
from tests.scenario_files import failover_first_round

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "load.js"


def load(lab: Lab, tmp_path: Path, *args: str) -> tuple[int, dict, str]:
    """`lab load ... --name <lab>`: the exit code, result.json, and the printed output."""
    result = runner.invoke(
        app, ["load", *args, "--name", lab.name, "--report-dir", str(tmp_path), "--no-dashboard"]
    )
    assert result.exit_code in (0, 1), result.output
    (path,) = tmp_path.glob("*/result.json")
    return result.exit_code, json.loads(path.read_text()), result.output


def no_k6_containers(engine: Engine, lab: Lab) -> bool:
    return not engine.list_containers({LABEL_LAB: lab.name, LABEL_NODE: "k6"})


def test_smoke_on_the_lab_network(running_lab: Lab, engine: Engine, tmp_path: Path) -> None:
    """A smoke run passes; every answer is a record with its backend and an intended time no
    later than its send; quotas are in force during the run and lifted after; nothing stays."""
    code, document, output = load(
        running_lab, tmp_path, "smoke", "--set", "rate=20", "--set", "duration_s=3"
    )
    assert code == 0, output
    assert document["verdict"] == "pass" and document["k6"]["generator"] == "network"
    requests = document["history"]["requests"]
    # 20/s for 3 s schedules 60; k6 itself sometimes starts only 59 (the last start falls on
    # the executor's end, and k6 counts no dropped iteration): every one k6 ran is a record.
    directory = Path(next(tmp_path.glob("*/result.json"))).parent
    summary = json.loads((directory / "summary.json").read_text())
    assert len(requests) == summary["metrics"]["iterations"]["count"] in (59, 60)
    assert all(r["outcome"] == "ok" for r in requests)
    assert {r["backend"] for r in requests} == set(running_lab.config.backend_names)
    assert all(r["intended_at"] <= r["sent_at"] + 1e-3 for r in requests)
    assert document["quotas"]["backend-1"] == 0.25
    nodes = {n["node"]: n for n in document["figures"]["nodes"]}
    assert {"k6", "nginx", "backend-1", "postgres"} <= set(nodes)
    assert len(document["history"]["access_log"]) >= len(requests)
    for node in running_lab.roles:
        assert engine.cpu_limit(running_lab.container(node)).cpus is None
    assert no_k6_containers(engine, running_lab)
    assert {"script.js", "summary.json", "k6.log", "result.json"} <= {
        p.name for p in directory.iterdir()
    }
    assert "rate" in output and "saturated" in output


def test_conversation_reads_writes_logins(running_lab: Lab, tmp_path: Path) -> None:
    """The conversation profile logs in, reads and writes with the lab's users; each 201
    write is in PostgreSQL."""
    code, document, output = load(
        running_lab,
        tmp_path,
        "conversation",
        "--set",
        "rate=30",
        "--set",
        "duration_s=4",
        "--set",
        "ramp_s=1",
        "--set",
        "logins=0.05",
    )
    assert code == 0, output
    requests = document["history"]["requests"]
    kinds = {r["client"] for r in requests}
    assert kinds == {"reads", "writes", "logins"}
    assert {r["status"] for r in requests if r["client"] == "writes"} == {201}
    writes = sum(1 for r in requests if r["client"] == "writes")
    with psycopg.connect(running_lab.endpoints.postgres_dsn, connect_timeout=5) as conn:
        stored = conn.execute(
            "SELECT count(*) FROM messages WHERE body LIKE %s AND created_at > to_timestamp(%s)",
            (f"{WRITE_MARKER} %", document["started_at"] - 1),
        ).fetchone()[0]
    assert stored == writes


@pytest.mark.covers("objective:load_p95")
def test_thresholds_tighter_than_the_topology_fail(running_lab: Lab, tmp_path: Path,
                                                   negative_control) -> None:
    """Negative control: a load_p95 objective of 0.1 ms cannot be met through NGINX: k6's
    threshold fails, exit 1."""
    code, document, _ = load(
        running_lab,
        tmp_path,
        "smoke",
        "--set",
        "rate=20",
        "--set",
        "duration_s=2",
        "--objective",
        "load_p95=0.1ms",
    )
    negative_control.observe(document)
    assert code == 1 and document["verdict"] == "fail"
    failed = [t for t in document["threshold_results"] if not t["passed"]]
    assert [t["expression"] for t in failed] == ["p(95)<0.1"]


def test_starved_generator_is_unknown_not_slow(running_lab: Lab, tmp_path: Path) -> None:
    """Negative control: one VU cannot start 300 iterations a second; the run is unknown,
    with the generator named as the cause, though every request sent was fast."""
    code, document, _ = load(
        running_lab,
        tmp_path,
        "smoke",
        "--set",
        "rate=300",
        "--set",
        "duration_s=3",
        "--set",
        "vus=1",
    )
    assert code == 1 and document["verdict"] == "unknown"
    assert "the generator could not keep the schedule" in document["reason"]
    assert document["figures"]["dropped"] > 0 and len(document["dropped"]) > 0


def test_user_script_runs_unchanged(running_lab: Lab, tmp_path: Path) -> None:
    """examples/load.js, an ordinary k6 script, runs with --script against the lab."""
    code, document, output = load(running_lab, tmp_path, "--script", str(EXAMPLE))
    assert code == 0, output
    assert document["profile"] == "load.js" and document["plan"] is None
    paths = {r["path"] for r in document["history"]["requests"]}
    assert paths == {"health", "conversations"}
    assert all(t["passed"] for t in document["threshold_results"])


def test_one_client_address_meets_the_api_zone(running_lab: Lab, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """From the host every request arrives from one address (Docker's proxy), and the api
    zone (100 r/s, no burst) rejects many at 150 reads/s; on the lab network each VU has its
    own address and none is rejected. The report directories are relative, as the default
    `.lab/runs` is: k6 on the host still finds its script."""
    monkeypatch.chdir(tmp_path)
    results = {}
    for where in ("host", "network"):
        folder = Path(where)
        code, document, _ = load(
            running_lab,
            folder,
            "conversation",
            "--from",
            where,
            "--set",
            "rate=150",
            "--set",
            "writes=0",
            "--set",
            "logins=0",
            "--set",
            "duration_s=3",
            "--set",
            "ramp_s=1",
        )
        remotes = {
            e["remote_addr"]
            for e in document["history"]["access_log"]
            if e["uri"].startswith("/api/")
        }
        results[where] = (code, document["figures"]["statuses"].get("429", 0), len(remotes))
    assert results["host"][1] > 50 and results["host"][2] == 1
    assert results["network"][1] == 0 and results["network"][2] > 10
    assert results["host"][0] == 1  # its error rate fails the run


def test_before_topology_runs_one_backend_on_postgres(
    engine: Engine, tmp_path: Path, lab_images: dict[str, str]
) -> None:
    """The comparison's "before": one backend whose database URL is PostgreSQL itself; k6
    reaches it directly and every answer comes from it."""
    lab = before_lab(engine, LabConfig(), session_lab_name("before"))
    try:
        lab.up(ephemeral=True)
        assert set(lab.roles) == {"postgres", "redis", "pgbouncer", "backend-1", "nginx"}
        info = lab.inspect("backend-1")
        assert info is not None and "@postgres:5432/" in info.env["LAB_DATABASE_URL"]
        plan = build_plan(
            "conversation",
            {"rate": 20, "duration_s": 2, "ramp_s": 1, "logins": 0},
            LoadThresholds(),
        )
        result = LoadRunner(
            lab, plan=plan, target=BACKEND_DIRECT, report_root=tmp_path, dashboard=False
        ).run()
        assert result.verdict.verdict.value == "pass", result.verdict.reason
        assert {r.backend for r in result.history.requests} == {"backend-1"}
        assert not result.history.access_log  # NGINX saw none of it
    finally:
        lab.down()


def test_live_line_in_a_real_terminal(running_lab: Lab, tmp_path: Path) -> None:
    """In a terminal (tmux), the live line shows the current rate, p95, errors and drops while
    k6 runs, and gives way to the end-of-run lines."""
    import shutil
    import subprocess
    import sys
    import time

    tmux = shutil.which("tmux")
    assert tmux, "the live-line test needs tmux (apt-get install tmux)"
    session = f"lab-load-{running_lab.name}"
    lab_cli = str(Path(sys.executable).with_name("lab"))
    command = (
        f"{lab_cli} load smoke --name {running_lab.name} --set rate=20 --set duration_s=8 "
        f"--report-dir {tmp_path} --no-dashboard; sleep 30"
    )
    subprocess.run(
        [tmux, "new-session", "-d", "-s", session, "-x", "160", "-y", "40", command], check=True
    )
    try:
        seen, deadline = "", time.monotonic() + 60
        while time.monotonic() < deadline:
            screen = subprocess.run(
                [tmux, "capture-pane", "-p", "-t", session],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            if "(schedule 20/s)" in screen and " ms  sent " in screen:
                seen = screen
                break
            time.sleep(0.5)
        assert "(schedule 20/s)" in seen and "errors 0" in seen, seen
        while time.monotonic() < deadline and "report:" not in screen:
            screen = subprocess.run(
                [tmux, "capture-pane", "-p", "-t", session],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            time.sleep(0.5)
        assert "smoke: pass" in screen, screen
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], check=False)


def test_a_scenario_beside_the_load_is_judged_on_both(running_lab: Lab, tmp_path: Path) -> None:
    """`lab load smoke --scenario failover`: one scenario result whose checks saw the k6
    traffic (NGINX logged it, an availability check judged the load's own requests), whose
    ejection window used the combined rate, and the load's own report beside it. failover's
    first round: one ejection shows all of it."""
    once = failover_first_round(tmp_path)
    result = runner.invoke(app, ["load", "smoke", "--set", "rate=30", "--set", "duration_s=60",
                                 "--scenario", str(once), "--name", running_lab.name,
                                 "--report-dir", str(tmp_path), "--no-dashboard", "--json"])
    assert result.exit_code in (0, 1), result.output
    document = json.loads(result.stdout)[0]
    assert document["scenario"] == "failover-once"
    load_requests = [r for r in document["history"]["requests"] if r["client"] == "load"]
    assert len(load_requests) > 100
    labels = [c["label"] for c in document["checks"]]
    assert labels.count("availability") == 2, labels
    ejection = next(c for c in document["checks"] if c["name"] == "ejection")
    # The replay reads every request NGINX logged, the load's too; the prediction's turn of a
    # backend uses the combined rate, (20 + 5 + 30)/s.
    decisions = ejection["values"]["decisions"]
    assert decisions > len(document["history"]["requests"]) - len(load_requests), decisions
    predicted = next(p for p in document["predictions"] if p["objective"] == "ejection")
    assert "* 0.055" in predicted["arithmetic"], predicted
    assert any(n.startswith("load smoke beside the steps") for n in document["notes"])
    [load_run] = [p.parent for p in tmp_path.glob("*-load-smoke-*/result.json")]
    # The scenario's report links the load's own files; `lab runs` lists both runs.
    assert document["load"]["directory"] == f"../{load_run.name}"
    assert "result.json" in document["load"]["files"]
    [scenario_run] = [p.parent for p in tmp_path.glob("*-failover-once-*/report.html")]
    page = (scenario_run / "report.html").read_text()
    assert f'href="../{load_run.name}/result.json"' in page
    listed = runner.invoke(app, ["runs", "--report-dir", str(tmp_path)], terminal_width=200)
    assert listed.exit_code == 0 and "load smoke" in listed.output, listed.output
    assert "unreadable" not in listed.output, listed.output
