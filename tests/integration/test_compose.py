"""The compose file agrees with the orchestrator's plan, holds no secret, and exports a
runnable directory.

Pure: no Docker engine is needed, except for the optional `docker compose config` validation.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lab.cli.app import app
from lab.config import LabConfig
from lab.topology import compose
from lab.topology.plan import READY_BEFORE_NEXT_STAGE, STAGES, NodePlan, plan
from lab.topology.render import LabSecrets
from lab.topology.tls import make_tls

COMMITTED = Path(__file__).resolve().parents[2] / "compose" / compose.COMPOSE_FILE
REGENERATE = f"python -m lab.topology.compose compose/{compose.COMPOSE_FILE}"
runner = CliRunner()


def orchestrator_plan(config: LabConfig, lab_secrets: LabSecrets) -> list[NodePlan]:
    """What the orchestrator starts for ``config`` with these secrets, on the compose subnet."""
    images = {role: f"failover-lab/{role}:0123abcd"
              for role in ("postgres", "pgbouncer", "redis", "backend", "nginx")}
    return plan(config, lab_secrets, make_tls("test", config.nginx.server_name), images,
                compose.SUBNET)


def committed_document() -> dict:
    return yaml.safe_load(COMMITTED.read_text())


def variables(lab_secrets: LabSecrets) -> dict[str, str]:
    return compose.secret_variables(lab_secrets)


def test_committed_file_is_what_the_generator_writes() -> None:
    """compose/docker-compose.yml is byte for byte the generator's output for the
    default configuration."""
    assert COMMITTED.read_text() == compose.compose_yaml(LabConfig()), (
        f"compose/{compose.COMPOSE_FILE} is out of date; regenerate it with `{REGENERATE}`"
    )
    assert committed_document() == compose.compose_document(LabConfig())


@pytest.mark.parametrize("config", [
    LabConfig(),
    LabConfig().with_overrides("backend", replicas=5, stop_timeout_s=25)
    .with_overrides("publish", nginx_https=8443),
], ids=["default", "five-backends"])
def test_services_match_the_orchestrator_nodes(config: LabConfig) -> None:
    """Each node is a service with its role's image, address, ports,
    stop grace period and start order."""
    document = compose.compose_document(config)
    nodes = orchestrator_plan(config, LabSecrets.generate())
    services = document["services"]
    assert list(services) == [n.name for n in nodes]
    assert document["networks"] == {"lab": {"ipam": {"config": [
        {"subnet": str(compose.SUBNET), "gateway": str(compose.SUBNET[1])}]}}}
    for node in nodes:
        service, spec = services[node.name], node.spec
        assert "container_name" not in service
        assert service["image"] == f"failover-lab/{node.role}:latest"
        assert spec.image.startswith(f"failover-lab/{node.role}:")
        network = service["networks"]["lab"]
        assert network["ipv4_address"] == spec.ipv4_address
        assert ipaddress.ip_address(network["ipv4_address"]) in compose.SUBNET
        assert {node.name, *network.get("aliases", [])} == {node.name, *spec.aliases}
        assert service["stop_grace_period"] == f"{spec.stop_timeout_s}s"
        expected_ports = sorted(f"127.0.0.1:{host or ''}:{port.removesuffix('/tcp')}"
                                for port, host in spec.publish.items())
        assert sorted(service.get("ports", [])) == expected_ports
        assert service["labels"] == {k: v for k, v in spec.labels.items()
                                     if k in compose.KEPT_LABELS}
    https = next(p for p in services["nginx"]["ports"] if p.endswith(":443"))
    assert https == ("127.0.0.1:8443:443" if config.publish.nginx_https else "127.0.0.1::443")
    assert "127.0.0.1::8080" in services["nginx"]["ports"]   # stub_status, always ephemeral


def test_depends_on_follows_the_start_stages() -> None:
    """A node of a later start stage waits for the previous stage:
    healthy where the orchestrator awaits readiness."""
    config = LabConfig()
    services = compose.compose_document(config)["services"]
    roles = {n.name: n.role for n in orchestrator_plan(config, LabSecrets.generate())}
    for previous, stage in itertools.pairwise(STAGES):
        for name in (n for n, role in roles.items() if role in stage):
            expected = {other: {"condition": "service_healthy" if other in READY_BEFORE_NEXT_STAGE
                                else "service_started"}
                        for other, role in roles.items() if role in previous}
            assert services[name]["depends_on"] == expected
            for other, condition in expected.items():
                if condition["condition"] == "service_healthy":
                    assert "healthcheck" in services[other]
    first = [n for n, role in roles.items() if role in STAGES[0]]
    assert all("depends_on" not in services[name] for name in first)
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]


def test_environment_and_files_equal_the_rendered_ones() -> None:
    """Environment values and file contents, once compose interpolates the secrets,
    are the orchestrator's, at the same paths and modes."""
    config = LabConfig()
    document = committed_document()
    lab_secrets = LabSecrets.generate()
    tls = compose.tls_files(config)
    assert {name for _, name, _ in tls.values()} == {"server.crt", "server.key", "ca.crt"}
    for node in orchestrator_plan(config, lab_secrets):
        service, spec = document["services"][node.name], node.spec
        environment = service.get("environment", {})
        assert list(environment) == list(spec.env)
        assert {k: compose.interpolate(v, variables(lab_secrets))
                for k, v in environment.items()} == dict(spec.env)
        mounted = {c["target"]: c for c in service.get("configs", [])}
        bound = {v["target"]: v for v in service.get("volumes", [])}
        assert set(mounted) | set(bound) == {f.path for f in spec.files}
        assert not set(mounted) & set(bound)
        for f in spec.files:
            if f.path in bound:
                assert bound[f.path]["source"] == f"./tls/{tls[f.path][1]}"
                assert bound[f.path]["read_only"] is True and tls[f.path][2] == f.mode
                continue
            entry = mounted[f.path]
            assert entry["mode"] == f.mode, (f"{node.name}:{f.path} mode {entry['mode']:o} "
                                             f"!= {f.mode:o}")
            content = document["configs"][entry["source"]]["content"]
            assert (compose.interpolate(content, variables(lab_secrets))
                    == f.content.decode()), f.path


def test_every_secret_bearing_field_is_a_variable_reference() -> None:
    """Every value that holds a secret in the plan is a ${LAB_...} reference in the committed
    file, and nothing else is."""
    config = LabConfig()
    document = committed_document()
    text = COMMITTED.read_text()
    first, second = LabSecrets.generate(), LabSecrets.generate()
    plans = (orchestrator_plan(config, first), orchestrator_plan(config, second))
    secret_bearing = 0
    for a, b in zip(*plans, strict=True):
        service = document["services"][a.name]
        pairs = [(service.get("environment", {}).get(k), a.spec.env[k], b.spec.env[k])
                 for k in a.spec.env]
        mounted = {c["target"]: document["configs"][c["source"]]["content"]
                   for c in service.get("configs", [])}
        pairs += [(mounted[fa.path], fa.content.decode(), fb.content.decode())
                  for fa, fb in zip(a.spec.files, b.spec.files, strict=True) if fa.path in mounted]
        for raw, with_first, with_second in pairs:
            assert raw is not None
            if with_first != with_second:  # this field carries a secret
                secret_bearing += 1
                assert compose.referenced_variables(raw), raw
                assert compose.interpolate(raw, variables(first)) == with_first
                assert compose.interpolate(raw, variables(second)) == with_second
            else:
                assert not compose.referenced_variables(raw), raw
    # At least userlist.txt, postgres.env, and each backend's URL, three tokens and seed password.
    assert secret_bearing >= 2 + 5 * config.backend.replicas, (
        "the secrets were not found in the plan")
    assert compose.referenced_variables(text) == set(compose.SECRET_VARIABLES.values())
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    for reference in re.findall(r"\$\{[^}]*\}", body):
        assert re.fullmatch(r"\$\{LAB_[A-Z_]+:\?run lab compose export\}", reference), reference
    assert "PRIVATE KEY" not in text and "CERTIFICATE" not in text
    for secret in (*first.__dict__.values(), *second.__dict__.values()):
        assert secret not in text


def test_inlined_secrets_document_interpolates_to_the_plan() -> None:
    """With secrets_as_variables=False the given values stand where the references were."""
    lab_secrets = LabSecrets.generate()
    document = compose.compose_document(LabConfig(), secrets_as_variables=False,
                                        lab_secrets=lab_secrets)
    dumped = yaml.safe_dump(document)
    assert not compose.referenced_variables(dumped)
    assert lab_secrets.db_password in document["configs"]["pgbouncer-userlist.txt"]["content"]
    with pytest.raises(ValueError, match="lab_secrets"):
        compose.compose_document(LabConfig(), secrets_as_variables=False)


def test_interpolate_follows_compose_rules() -> None:
    """$$ is a literal dollar, ${VAR:?msg} needs a value, and a bare $ is an escaping bug."""
    assert compose.interpolate("a $$b ${X:?set it} ${Y}", {"X": "1", "Y": "2"}) == "a $b 1 2"
    with pytest.raises(KeyError, match="set it"):
        compose.interpolate("${X:?set it}", {"X": ""})
    with pytest.raises(ValueError, match="unescaped"):
        compose.interpolate("map $status", {})


def test_export_writes_env_tls_and_the_compose_file(tmp_path: Path) -> None:
    """An export holds the compose file, a .env setting every referenced variable,
    and the TLS files nginx mounts."""
    config = LabConfig()
    path = compose.export_compose(config, tmp_path / "out")
    directory = path.parent
    text = path.read_text()
    assert text == compose.compose_yaml(config)
    env = dict(line.split("=", 1) for line in (directory / ".env").read_text().splitlines()
               if line and not line.startswith("#"))
    assert set(env) == compose.referenced_variables(text)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{20,}", value) for value in env.values())
    assert (directory / ".env").stat().st_mode & 0o777 == 0o600
    document = yaml.safe_load(text)
    for volume in document["services"]["nginx"]["volumes"]:
        source = directory / volume["source"]
        assert source.is_file(), source
        _, _, mode = compose.tls_files(config)[volume["target"]]
        assert source.stat().st_mode & 0o777 == mode
    assert (directory / "tls" / "server.key").read_bytes().startswith(
        b"-----BEGIN PRIVATE KEY-----")
    assert (directory / "tls" / "server.crt").read_bytes().startswith(
        b"-----BEGIN CERTIFICATE-----")
    # The exported secrets are fresh: a second export differs.
    again = compose.export_compose(config, tmp_path / "again").parent
    assert (again / ".env").read_text() != (directory / ".env").read_text()


def test_cli_export_refuses_a_non_empty_directory_without_force(tmp_path: Path) -> None:
    """`lab compose export` writes into a new directory, and overwrites a non-empty
    one only with --force."""
    target = tmp_path / "stack"
    first = runner.invoke(app, ["compose", "export", str(target)])
    assert first.exit_code == 0, first.output
    env_before = (target / ".env").read_text()
    refused = runner.invoke(app, ["compose", "export", str(target)])
    assert refused.exit_code == 2 and "not empty" in refused.output
    assert (target / ".env").read_text() == env_before
    forced = runner.invoke(app, ["compose", "export", str(target), "--force"])
    assert forced.exit_code == 0, forced.output
    assert (target / ".env").read_text() != env_before


def test_docker_compose_accepts_the_exported_file(tmp_path: Path) -> None:
    """`docker compose config -q` accepts an exported directory (skipped where
    compose is not installed)."""
    command = compose.find_compose()
    if command is None:
        pytest.skip("no compose v2 (`docker compose` or docker-compose 2.x) is installed")
    path = compose.export_compose(LabConfig(), tmp_path / "stack")
    done = subprocess.run([*command, "-f", str(path), "config", "-q"], capture_output=True,
                          text=True, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
