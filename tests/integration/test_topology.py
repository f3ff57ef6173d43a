"""The replica topology for real: up, status, a query through PgBouncer, down, and bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from lab.cli.app import app
from lab.config import LabConfig
from lab.engine import LABEL_LAB, Engine
from lab.errors import PortConflict
from lab.topology.lab import Lab
from tests.conftest import session_lab_name

runner = CliRunner()
NODES = {"postgres", "pgbouncer", "redis", "backend-1", "backend-2", "backend-3", "nginx"}


def leftovers(engine: Engine, name: str) -> list[str]:
    """Containers and networks that still carry the lab's label."""
    containers = [c.name for c in engine.list_containers({LABEL_LAB: name})]
    networks = [] if not engine.network_exists(f"lab-{name}") else [f"lab-{name}"]
    return containers + networks


def test_status_shows_every_node_ready(running_lab: Lab) -> None:
    """Every node of the running lab is running and ready, with its published addresses."""
    status = running_lab.status()
    assert {n.name for n in status.nodes} == NODES
    assert all(n.state == "running" and n.ready for n in status.nodes), status.nodes
    published = {n.name: n.published for n in status.nodes}
    # Only NGINX and what checks read are published, and only on 127.0.0.1.
    assert all(not published[f"backend-{i}"] for i in (1, 2, 3))
    assert all(p.startswith("127.0.0.1:") for ps in published.values() for p in ps)


def test_status_json_is_the_documented_document(running_lab: Lab) -> None:
    """`lab status --json` prints the documented schema with one entry per node."""
    result = runner.invoke(app, ["status", "--name", running_lab.name, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["schema"] == 1 and document["lab"] == running_lab.name
            and document["ready"] is True)
    assert {n["name"] for n in document["nodes"]} == NODES
    assert set(document["nodes"][0]) == {"name", "role", "state", "ready", "detail", "published",
                                         "uptime_s"}
    assert document["endpoints"]["nginx_http"].startswith("http://127.0.0.1:")


def test_query_through_pgbouncer_in_transaction_mode(running_lab: Lab) -> None:
    """A query through PgBouncer reaches PostgreSQL, and the admin console reports transaction
    pooling."""
    with psycopg.connect(running_lab.endpoints.pgbouncer_dsn, prepare_threshold=None,
                         autocommit=True) as conn:
        assert conn.execute("SELECT current_database(), current_user").fetchone() == ("app", "app")
    with psycopg.connect(running_lab.endpoints.pgbouncer_admin_dsn, autocommit=True,
                         cursor_factory=psycopg.ClientCursor) as admin:
        cursor = admin.execute("SHOW CONFIG")
        config = {row[0]: row[1] for row in cursor.fetchall()}
    assert config["pool_mode"] == "transaction"
    assert config["default_pool_size"] == "30" and config["max_client_conn"] == "1000"


def test_userlist_is_readable_by_pgbouncer_only(running_lab: Lab) -> None:
    """PgBouncer's userlist holds the generated secret with mode 0600, owned by its user."""
    code, output = running_lab.exec("pgbouncer",
                                    ["stat", "-c", "%a %U", "/etc/pgbouncer/userlist.txt"])
    assert code == 0 and output.split() == ["600", "postgres"]
    code, output = running_lab.exec("pgbouncer", ["cat", "/etc/pgbouncer/userlist.txt"])
    assert running_lab.secrets.db_password in output


def test_https_is_signed_by_the_lab_ca_with_security_headers(running_lab: Lab) -> None:
    """HTTPS verifies against the lab's CA and answers with HSTS and the security headers."""
    code, ca_pem = running_lab.exec("nginx", ["cat", "/etc/lab/tls/ca.crt"])
    assert code == 0
    lab_ca = ssl.create_default_context(cadata=ca_pem)
    response = httpx.get(f"{running_lab.endpoints.nginx_https}/health", verify=lab_ca)
    assert response.status_code == 200
    assert response.headers["strict-transport-security"].startswith("max-age=31536000")
    assert response.headers["x-frame-options"] == "SAMEORIGIN"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" in response.headers
    with pytest.raises(httpx.ConnectError):
        # not publicly trusted
        httpx.get(f"{running_lab.endpoints.nginx_https}/health", verify=True)


def test_up_again_changes_nothing(running_lab: Lab) -> None:
    """`lab up` against a running lab says so and leaves every container as it was."""
    before = {n.name: running_lab.inspect(n.name).id for n in running_lab.status().nodes}
    result = runner.invoke(app, ["up", "--name", running_lab.name])
    assert result.exit_code == 0, result.output
    assert "already running" in result.stdout
    after = {n: running_lab.inspect(n).id for n in before}
    assert before == after


def test_up_down_and_two_labs_side_by_side(engine: Engine, lab_images: dict[str, str]) -> None:
    """Two named labs run at once on separate networks; down removes each one's resources only."""
    first = Lab(engine, LabConfig(name=session_lab_name("a")))
    second = Lab(engine, LabConfig(name=session_lab_name("b")))
    try:
        first.up(ephemeral=True)
        second.up(ephemeral=True)
        assert first.status().ready and second.status().ready
        assert first.endpoints.nginx_http != second.endpoints.nginx_http
        assert first.secrets.db_password != second.secrets.db_password
        assert set(first.addresses()).isdisjoint(second.addresses())
        first.down()
        assert leftovers(engine, first.name) == []
        assert second.status().ready
    finally:
        first.down()
        second.down()
    assert leftovers(engine, second.name) == []


def test_sigkilled_up_leaves_orphans_that_the_next_up_removes(engine: Engine,
                                                              lab_images: dict[str, str]) -> None:
    """A `lab up` killed with SIGKILL mid-start leaves containers; the next `lab up` removes
    them."""
    name = session_lab_name("orphan")
    process = subprocess.Popen([sys.executable, "-m", "lab", "up", "--name", name],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not engine.list_containers({LABEL_LAB: name}):
            time.sleep(0.05)
        assert engine.list_containers({LABEL_LAB: name}), "lab up never created a container"
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        assert leftovers(engine, name), "the SIGKILL left nothing to clean up"
        result = runner.invoke(app, ["up", "--name", name])
        assert result.exit_code == 0, result.output
        assert "ready" in result.stdout
    finally:
        process.kill()
        runner.invoke(app, ["down", "--name", name])
    assert leftovers(engine, name) == []


def test_port_conflict_is_named_and_leaves_nothing(engine: Engine,
                                                   lab_images: dict[str, str]) -> None:
    """A fixed NGINX port that is taken gives PortConflict and no half-started lab."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = LabConfig(name=session_lab_name("port")).with_overrides("publish", nginx_http=port)
        lab = Lab(engine, config)
        with pytest.raises(PortConflict, match=str(port)):
            lab.up(ephemeral=True)
    assert leftovers(engine, lab.name) == []


def test_malformed_config_names_the_field(tmp_path) -> None:
    """A lab.toml with a bad value exits 2 naming the field, without a traceback."""
    bad = tmp_path / "lab.toml"
    bad.write_text("[pgbouncer]\ndefault_pool_size = -3\n[nginx]\nmax_fails = 'three'\n")
    result = runner.invoke(app, ["up", "--config", str(bad)])
    assert result.exit_code == 2
    assert "pgbouncer.default_pool_size" in result.stderr and "nginx.max_fails" in result.stderr
    assert "Traceback" not in result.output


def test_unreachable_daemon_is_one_clear_line(tmp_path) -> None:
    """With DOCKER_HOST at a dead socket, every command says so and exits 2."""
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/dead.sock"}
    for command in (["up"], ["status"], ["down"]):
        done = subprocess.run([sys.executable, "-m", "lab", *command], check=False, env=env,
                              capture_output=True, text=True)
        assert done.returncode == 2, done
        assert "DockerUnavailable: no Docker engine answers" in done.stderr
        assert "Traceback" not in done.stderr


def test_failed_image_build_names_the_step_and_its_output(engine: Engine,
                                                          lab_images: dict[str, str]) -> None:
    """A Dockerfile step that fails raises ImageBuildError naming the step, with its output."""
    import io
    import tarfile

    from lab.engine import LABEL_IMAGE
    from lab.errors import ImageBuildError

    dockerfile = (f"FROM {lab_images['redis']}\nRUN echo preparing\n"
                  "RUN echo 'the mirror is gone' >&2 && exit 7\n").encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        archive.addfile(info, io.BytesIO(dockerfile))
    with pytest.raises(ImageBuildError) as error:
        engine.build(buffer.getvalue(), "failover-lab/broken:test", buildargs={},
                     labels={LABEL_IMAGE: "broken-test"})
    text = error.value.render()
    assert "failed at Step 3/" in text and "RUN echo 'the mirror is gone'" in text
    assert "the mirror is gone" in error.value.details
    assert "returned a non-zero code: 7" in text


def test_a_lab_of_another_lab_version_does_not_stop_orphan_removal(engine: Engine) -> None:
    """A dead owner's lab whose config label has a field this version does not know is kept,
    and nothing crashes."""
    from lab.engine import LABEL_CONFIG
    from lab.topology.lab import LABEL_OWNER, remove_orphans
    from lab.topology.plan import network_name

    name = session_lab_name("other-version")
    config = json.loads(LabConfig(name=name).model_dump_json())
    config["backend"]["a_field_from_the_future"] = True
    engine.create_network(network_name(name), {LABEL_LAB: name, LABEL_CONFIG: json.dumps(config),
                                               LABEL_OWNER: f"{socket.gethostname()}:999999999"})
    try:
        remove_orphans(engine)
        assert engine.network_exists(network_name(name))
    finally:
        engine.remove_labelled({LABEL_LAB: name})
    assert not engine.network_exists(network_name(name))


def _timings(output: str) -> dict[str, dict[str, float | None]]:
    """The node rows of `lab up --timings`: node -> created/started/probing/ready seconds."""
    rows: dict[str, dict[str, float | None]] = {}
    for line in output.splitlines():
        fields = line.split()
        if fields and fields[0] in NODES and len(fields) >= 6:
            values = [None if f == "-" else float(f) for f in fields[1:5]]
            rows[fields[0]] = dict(zip(("created", "started", "probing", "ready"), values))
    return rows


def test_up_timings_show_each_node_in_the_start_order(engine: Engine,
                                                      lab_images: dict[str, str]) -> None:
    """`lab up --timings` prints every node's created/started/probing/ready times, and they obey
    the start rules: PgBouncer probed only after PostgreSQL was ready, NGINX started after every
    backend and probed after every backend was ready; PgBouncer never failed a server login,
    and a restarted PgBouncer does not wait for the start gate again."""
    name = session_lab_name("timings")
    try:
        result = runner.invoke(app, ["up", "--name", name, "--timings"])
        assert result.exit_code == 0, result.output
        rows = _timings(result.stdout)
        assert set(rows) == NODES, result.stdout
        for node, row in rows.items():
            assert None not in row.values(), (node, row)
            assert row["created"] <= row["started"] <= row["probing"] <= row["ready"], (node, row)
        backends = [rows[f"backend-{i}"] for i in (1, 2, 3)]
        assert rows["pgbouncer"]["probing"] >= rows["postgres"]["ready"]
        assert rows["nginx"]["started"] >= max(b["started"] for b in backends)
        assert rows["nginx"]["probing"] >= max(b["ready"] for b in backends)
        assert all(b["probing"] >= rows["pgbouncer"]["ready"] for b in backends)
        lab = Lab.attach(engine, name)
        log = lab.logs("pgbouncer", tail="all")
        assert "process up" in log, log
        assert "login failed" not in log and "connect failed" not in log, log
        lab.stop("pgbouncer", timeout_s=2)
        assert lab.start("pgbouncer", timeout_s=20).ok
    finally:
        runner.invoke(app, ["down", "--name", name])
    assert leftovers(engine, name) == []
