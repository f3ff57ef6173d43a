"""Scenarios for real: every shipped scenario passes on a healthy lab, every check and objective
fails on a deliberately broken one (run as it is: the checks judge the configuration that
runs, and the checklist's objectives say what it misses), and faults are healed after an
error, SIGTERM or SIGKILL.

The negative controls hand their runs to the ``negative_control`` gate (tests/conftest.py); a
control that can only show its point against a claimed configuration says so and does not
take the gate."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from lab.checks import CheckResult, Verdict
from lab.cli.app import app
from lab.config import LabConfig
from lab.engine import LABEL_KIND, LABEL_LAB, Engine
from lab.errors import LabError
from lab.scenarios.loader import available, load_scenario, parse_scenario
from lab.scenarios.model import Scenario
from lab.scenarios.runner import Runner, RunResult
from lab.scenarios.steps import InjectStep
from lab.topology.expect import claimed
from lab.topology.lab import Lab
from lab.topology.render import render_nginx
from lab.verdict import ObjectiveResult
from tests.conftest import session_lab_name
from tests.scenario_files import failover_first_round

runner = CliRunner()
# What the deployment checklist claims: the default configuration.
CLAIMED = claimed(LabConfig())


def by_name(result: RunResult | tuple[CheckResult, ...]) -> dict[str, CheckResult]:
    """Each check by its label (rate-limit checks differ by location)."""
    checks = result.checks if isinstance(result, RunResult) else result
    return {check.shown: check for check in checks}


def objective(check: CheckResult, name: str) -> ObjectiveResult:
    """One objective judged on a check; a missing one fails the test by name."""
    found = [o for o in check.objectives if o.name == name]
    assert found, f"{check.shown} has no objective {name}: {check.objectives}"
    return found[0]


def sidecars(engine: Engine, lab: Lab) -> list[str]:
    return [c.name for c in engine.list_containers({LABEL_LAB: lab.name, LABEL_KIND: "sidecar"})]


@contextmanager
def started(engine: Engine, suffix: str, *, nginx_conf: str | None = None,
            extra_publish: dict[str, dict[str, int]] | None = None,
            **sections: dict[str, object]) -> Iterator[Lab]:
    """A lab of its own for one test, with configuration overrides by section; always removed."""
    config = LabConfig(name=session_lab_name(suffix))
    for section, values in sections.items():
        config = config.with_overrides(section, **values)
    lab = Lab(engine, config, nginx_conf=nginx_conf, extra_publish=extra_publish)
    try:
        lab.up(ephemeral=True)
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def broken_balancer(engine: Engine, lab_images: dict[str, str]) -> Iterator[Lab]:
    """NGINX that never ejects (max_fails=0), waits 3 s to connect, and weights backend-1 x4."""
    broken = LabConfig().with_overrides("nginx", max_fails=0, connect_timeout_s=3.0)
    conf = render_nginx(broken).replace("server backend-1:8000 ", "server backend-1:8000 weight=4 ")
    with started(engine, "broken-lb", nginx_conf=conf) as lab:
        yield lab


@pytest.fixture(scope="module")
def no_retries(engine: Engine, lab_images: dict[str, str]) -> Iterator[Lab]:
    """NGINX that never retries another backend."""
    broken = LabConfig().with_overrides("nginx", next_upstream=("off",))
    with started(engine, "no-retry", nginx_conf=render_nginx(broken)) as lab:
        yield lab


@pytest.mark.covers("check:rate-limit", "check:rate-limit-headers", "objective:rate_limits",
                    "objective:rate_limit_headers")
def test_rate_limits_fail_when_nginx_limits_less_than_the_checklist(
        engine: Engine, lab_images: dict[str, str], negative_control) -> None:
    """Burst 10 on auth, no limit on the API and 429s without X-RateLimit-Status, run as they
    are: NGINX limits exactly as configured, and the checklist's limits (auth 10 r/s burst 5,
    api 100 r/s) and rate-limit headers fail; the 429s lack the header the check requires."""
    zones = LabConfig().nginx.rate_limits
    loose = (zones[0].model_copy(update={"burst": 10}), zones[2])  # auth burst 10; no api zone
    conf = "".join(line for line
                   in render_nginx(LabConfig().with_overrides("nginx", rate_limits=loose))
                   .splitlines(keepends=True) if "X-RateLimit-Status" not in line)
    with started(engine, "loose-limits", nginx_conf=conf) as lab:
        run = Runner(lab, load_scenario("rate-limits"), seed=12).run()
    negative_control.observe(run)
    result = by_name(run)
    auth = result["rate-limit /api/auth/"]
    assert auth.verdict is Verdict.PASS, auth            # burst 10, as configured
    assert objective(auth, "rate_limits").verdict is Verdict.FAIL, auth.objectives
    assert objective(result["rate-limit /api/"], "rate_limits").verdict is Verdict.FAIL
    assert result["rate-limit /webhooks/"].overall is Verdict.PASS, result["rate-limit /webhooks/"]
    headers = result["rate-limit-headers"]
    assert headers.verdict is Verdict.FAIL, headers
    assert objective(headers, "rate_limit_headers").verdict is Verdict.FAIL, headers.objectives


def test_rate_limits_fail_when_nginx_keys_zones_on_the_server_name(
        engine: Engine, lab_images: dict[str, str]) -> None:
    """Zones keyed on $server_name share one bucket among all clients: the host's login burst
    eats the second client's allowance, which the claimed per-address limit must catch.

    Only a claim shows this: run as it is, NGINX limits per server name exactly as configured,
    and a shared bucket lets each client through less, never more, than the checklist's
    per-address limit. It is kept for what it shows, and does not count for the gate."""
    conf = render_nginx(LabConfig()).replace("$binary_remote_addr", "$server_name")
    with started(engine, "shared-key", nginx_conf=conf) as lab:
        run = Runner(lab, load_scenario("rate-limits"), seed=19, claimed=CLAIMED).run()
    auth = by_name(run)["rate-limit /api/auth/"]
    assert auth.verdict is Verdict.FAIL, auth
    # The host's own requests carry X-Request-Id; the other address on /api/auth/ is the
    # second client.
    sent = {r.request_id for r in run.history.requests}
    host = {e.remote_addr for e in run.history.access_log if e.request_id in sent}
    second = {e.remote_addr for e in run.history.access_log
              if e.uri.startswith("/api/auth/")} - host
    assert len(second) == 1, (host, second)
    address = second.pop()
    assert any(f" {address} POST /api/auth/login (worker " in d
               and "NGINX REJECTED, the model PASSED" in d for d in auth.details), auth.details
    assert any(d.startswith(f"client {address}: ") for d in auth.details), auth.details


@pytest.mark.covers("check:tls", "check:security-headers", "objective:hsts_max_age",
                    "objective:security_headers")
def test_security_objectives_name_what_a_broken_config_drops(
        engine: Engine, lab_images: dict[str, str], negative_control) -> None:
    """An NGINX without its Content-Security-Policy and HSTS lines, run as it is, sends what it
    is told to (conformance passes) and fails the checklist's security-header and HSTS
    objectives, naming what is missing."""
    lines = render_nginx(LabConfig()).splitlines(keepends=True)
    conf = "".join(line for line in lines if "Content-Security-Policy" not in line
                   and "Strict-Transport-Security" not in line)
    with started(engine, "no-csp", nginx_conf=conf) as lab:
        run = Runner(lab, load_scenario("security"), seed=13).run()
    negative_control.observe(run)
    result = by_name(run)
    headers, tls = result["security-headers"], result["tls"]
    assert headers.verdict is Verdict.PASS, headers
    wanted = objective(headers, "security_headers")
    assert wanted.verdict is Verdict.FAIL and "Content-Security-Policy missing" in wanted.measured
    assert tls.verdict is Verdict.PASS, tls
    hsts = objective(tls, "hsts_max_age")
    assert hsts.verdict is Verdict.FAIL and "missing" in hsts.measured, hsts


EXPOSURE_PROBE = """name: exposure-probe
description: Read every container's published ports and connect to each on 127.0.0.1.
steps:
  - probe: exposure
checks:
  - exposure
"""


@pytest.mark.covers("check:exposure")
def test_exposure_fails_when_a_backend_publishes_its_port(
        engine: Engine, lab_images: dict[str, str], negative_control) -> None:
    """A backend that publishes 8000/tcp (even on 127.0.0.1) is reachable past
    NGINX: the check names it."""
    with started(engine, "exposed", extra_publish={"backend-2": {"8000/tcp": 0}}) as lab:
        run = Runner(lab, parse_scenario(EXPOSURE_PROBE, "exposure-probe"), seed=18).run()
    negative_control.observe(run)
    exposure = by_name(run)["exposure"]
    assert exposure.verdict is Verdict.FAIL, exposure
    offending = [d for d in exposure.details
                 if d.startswith("backend-2 (backend) publishes 8000/tcp on 127.0.0.1:")]
    assert offending and "accepted a TCP connection" in offending[0], exposure.details
    # the documented ports still answer (stub_status too)
    assert dict(exposure.values)["confirmed"] == 6, exposure


@pytest.mark.covers("check:health-contract", "check:health-detailed-timing",
                    "objective:health_contract")
def test_health_contract_fails_when_detailed_health_ignores_redis(
        engine: Engine, lab_images: dict[str, str], negative_control) -> None:
    """A backend whose health checks never ask Redis answers 200 during a Redis outage: it
    fails the contract, the checklist's health objective, and never turns 503 when Redis
    freezes."""
    with started(engine, "blind-health", backend={"health_checks_redis": False}) as lab:
        run = Runner(lab, load_scenario("health-contract"), seed=14).run()
    negative_control.observe(run)
    result = by_name(run)
    contract = result["health-contract"]
    assert contract.verdict is Verdict.FAIL, contract
    assert any("/health/detailed (redis-down): 200 where 503" in d
               for d in contract.details), contract.details
    assert objective(contract, "health_contract").verdict is Verdict.FAIL, contract.objectives
    timing = result["health-detailed-timing"]
    assert timing.verdict is Verdict.FAIL and "never 503 naming redis" in timing.measured, timing


@pytest.mark.covers("check:health-startup", "check:health-drain")
def test_health_startup_and_drain_fail_when_readiness_ignores_the_lifecycle(
        engine: Engine, lab_images: dict[str, str], negative_control) -> None:
    """A backend whose readiness ignores startup and draining answers 200 first after a
    restart and while it drains."""
    with started(engine, "ungated-ready", backend={"readiness_gates": False}) as lab:
        run = Runner(lab, load_scenario("health-contract"), seed=18).run()
    negative_control.observe(run)
    result = by_name(run)
    startup, drain = result["health-startup"], result["health-drain"]
    assert startup.verdict is Verdict.FAIL, startup
    assert "first /health/ready answer was 200, expected 503" in startup.measured, startup
    assert drain.verdict is Verdict.FAIL, drain
    assert "no /health/ready 503 before the process was gone" in drain.measured, drain
    assert result["health-detailed-timing"].verdict is Verdict.PASS, (
        result["health-detailed-timing"])


def test_health_bounds_fail_when_backends_wait_longer_and_drain_shorter_than_claimed(
        engine: Engine, lab_images: dict[str, str]) -> None:
    """Backends that wait 4 s for a frozen Redis and do not drain,
    judged against a claimed 1 s timeout and 3 s drain, fail both bounds.

    Only a claim shows this: run as they are, the backends keep the bounds their own settings
    imply (a 2 s timeout, no drain), and no objective states a drain time. It is kept for what
    it shows, and does not count for the gate."""
    with started(engine, "slow-health",
                 backend={"dependency_timeout_s": 4.0, "drain_s": 0.0}) as lab:
        # The drain's floor is the claim less the watcher's longest pause and answer: with
        # the checklist's 1 s, a 0.9 s stall on a busy CI machine let no drain pass (once).
        claims = claimed(LabConfig().with_overrides("backend", drain_s=3.0))
        result = by_name(Runner(lab, load_scenario("health-contract"), seed=19,
                                claimed=claims).run())
    timing, drain = result["health-detailed-timing"], result["health-drain"]
    assert timing.verdict is Verdict.FAIL, timing
    # The bound: the watcher's own pause and healthy answer, measured, on top of 1 s. That
    # allowance once came out near 1 s (a slow answer outside the faults), which let a 2 s
    # wait pass a 1 s claim in one run of four, and stays a known weakness of the check
    # (closing note). So the backends wait 4 s: the freeze, timed by the claimed 1 s
    # (2 x 1 + 1 s), usually ends before their wait does and no 503 comes at all, as wrong
    # against 1 s; a late heal gives a 503 near 4 s, which only a 3 s allowance would pass.
    assert (re.search(r"redis freeze: .*s after redis went down, expected within \d\.\d+ s",
                      timing.measured)
            or "redis freeze: no 503" in timing.measured), timing
    assert drain.verdict is Verdict.FAIL, drain
    # With no drain, a ready 503 may or may not fall between SIGTERM and the listener closing.
    assert (re.search(r"expected at least 2\.\d+ s", drain.measured)
            or "no /health/ready 503" in drain.measured), drain
    assert result["health-startup"].verdict is Verdict.PASS, result["health-startup"]


@pytest.mark.covers("check:pool-bound", "objective:pool_server_connections",
                    "objective:pool_clients")
def test_pool_bound_fails_with_a_pool_of_300(engine: Engine, lab_images: dict[str, str],
                                             negative_control) -> None:
    """A PgBouncer pool of 300, run as it is, lets PostgreSQL see far more than the checklist's
    30 server connections under the direct load; the load through the backends alone stays
    within 30. With max_client_conn 200 the 300 direct clients are not all served: the clients'
    errors fail the check, and both pool objectives fail."""
    with started(engine, "pool-300",
                 pgbouncer={"default_pool_size": 300, "max_client_conn": 200}) as lab:
        run = Runner(lab, load_scenario("pool-saturation"), seed=15).run()
    negative_control.observe(run)
    pool = by_name(run)["pool-bound"]
    assert pool.verdict is Verdict.FAIL, pool
    assert any("client error" in d for d in pool.details), pool.details
    # The backends' own pools (3 x psycopg_pool max_size 10) cap their share at the claimed
    # 30 whatever PgBouncer allows: it is the direct load that breaks the bound.
    values = dict(pool.values)
    assert values["backends_peak_pgbouncer_clients"] <= 30, pool
    assert values["direct_peak_server_connections"] > 30, pool
    assert objective(pool, "pool_server_connections").verdict is Verdict.FAIL, pool.objectives
    assert objective(pool, "pool_clients").verdict is Verdict.FAIL, pool.objectives


FROZEN_POOLER = """name: frozen-pooler
description: Freeze PgBouncer for six seconds under slow reads that need the database.
traffic:
  - {client: reads, rate: 2, path: /api/conversations, auth: true}
steps:
  - wait: 1
  - inject: {fault: freeze, target: pgbouncer}
  - wait: 6
  - heal: {fault: freeze, target: pgbouncer}
  - wait: 3
checks:
  - fail-fast: {client: reads}
"""


@pytest.mark.covers("check:fail-fast", "objective:fail_fast")
def test_fail_fast_fails_when_backends_wait_longer_than_clients_may(
        engine: Engine, lab_images: dict[str, str], negative_control) -> None:
    """Backends that wait 2 s per database call (LAB_DEPENDENCY_TIMEOUT_S=1), run as they are:
    each answer stays within the bound their budget implies (conformance), and clients wait
    longer than a 3 s fail-fast objective allows; the prediction (3 tries x 2 s) said so.

    At 2 requests/s the first request's retry goes out before any backend has max_fails
    failures, so it waits two budgets (4 s) at least; at higher rates all three backends are
    ejected after their first 503s and nobody waits twice."""
    with started(engine, "slow-budget", backend={"dependency_timeout_s": 1.0}) as lab:
        run = Runner(lab, parse_scenario(FROZEN_POOLER, "frozen-pooler"), seed=16,
                     objective_overrides={"fail_fast": "3s"}).run()
    negative_control.observe(run)
    fail_fast = by_name(run)["fail-fast"]
    assert fail_fast.verdict is Verdict.PASS, fail_fast
    assert objective(fail_fast, "fail_fast").verdict is Verdict.FAIL, fail_fast.objectives
    assert any(p.objective == "fail_fast" and p.reachable is False for p in run.predictions)


@pytest.mark.covers("check:recovery", "objective:dependency_recovery")
def test_recovery_fails_when_pgbouncer_retries_logins_slower_than_clients_may_wait(
        engine: Engine, lab_images: dict[str, str], negative_control) -> None:
    """A server_login_retry of 12 s keeps the database away for longer than clients may wait
    (a 5 s recovery objective): the run conforms to that configuration and fails the objective,
    as predicted. (12 s against 5 s shows what 40 s against the default 30 s did, in 28 s less
    of CI's time: the scenario waits fail_timeout + server_login_retry + 3.)"""
    scenario = load_scenario("postgres-restart")
    with started(engine, "slow-retry", pgbouncer={"server_login_retry_s": 12}) as lab:
        run = Runner(lab, scenario, seed=17, objective_overrides={"dependency_recovery": "5s"}
                     ).run()
    negative_control.observe(run)
    recovery = by_name(run)["recovery"]
    assert recovery.verdict is Verdict.PASS, recovery
    assert objective(recovery, "dependency_recovery").verdict is Verdict.FAIL, recovery.objectives
    assert any(p.objective == "dependency_recovery" and p.reachable is False
               for p in run.predictions)


@pytest.fixture(scope="module")
def lab_for(running_lab: Lab, engine: Engine) -> Iterator[Callable[[Scenario], Lab]]:
    """The lab a scenario asks for: the shared one, or one per distinct set of overrides."""
    started_labs: dict[str, Lab] = {}
    with ExitStack() as stack:

        def get(scenario: Scenario) -> Lab:
            if not scenario.lab:
                return running_lab
            key = json.dumps(scenario.lab, sort_keys=True)
            if key not in started_labs:
                started_labs[key] = stack.enter_context(
                    started(engine, f"overrides-{len(started_labs)}", **scenario.lab))
            return started_labs[key]

        yield get


# Scenarios another test already runs whole on a healthy default lab and asserts to pass on
# both layers: CI's 40 minutes are spent once per scenario. Each names where.
JUDGED_ELSEWHERE = {
    # Asserted to pass with the defaults by the test showing its objective failing.
    "slow-backend": "test_objective_controls.py::test_a_slow_backend_stays_in_rotation...",
    # `lab run failover` exits 0 (test_report.py's failover_run, seed 31); also the plugin's
    # user test (seed 41) and the load test beside it.
    "failover": "test_report.py::failover_run",
    # Verdict pass by the CLI (seed 11) and after healing a SIGKILLed run's leftovers (seed 5).
    "distribution": "test_run_cli_writes_json_and_exits_by_verdict, test_next_run_heals...",
}


@pytest.mark.parametrize("name", sorted(set(available()) - set(JUDGED_ELSEWHERE)))
def test_shipped_scenario_passes_on_a_healthy_lab(
        lab_for: Callable[[Scenario], Lab], name: str) -> None:
    """Each shipped scenario's checks and objectives all pass against a lab configured as the
    scenario asks, judged against what it runs and the checklist's targets."""
    scenario = load_scenario(name)
    lab = lab_for(scenario)
    result = Runner(lab, scenario, seed=7).run()
    failed = [f"{c.shown}: {c.verdict.value}: {c.measured} (expected {c.expected}; {c.derivation}) "
              f"{list(c.details[:5])}" for c in result.checks if c.verdict is not Verdict.PASS]
    failed += [f"{c.shown}: objective {o.name} {o.threshold}: {o.verdict.value}: {o.measured}"
               for c in result.checks for o in c.objectives if o.verdict is not Verdict.PASS]
    assert not failed, "\n".join(failed)
    assert result.verdict is Verdict.PASS
    assert bool(result.history.faults) == any(isinstance(step, InjectStep)
                                              for step in scenario.steps)
    assert not sidecars(lab.engine, lab)


@pytest.mark.covers("check:ejection", "check:latency", "check:distribution",
                    "objective:ejection", "objective:failing_latency",
                    "objective:even_distribution")
def test_ejection_latency_and_distribution_fail_on_a_broken_balancer(
        broken_balancer: Lab, negative_control, tmp_path: Path) -> None:
    """A balancer that never ejects, connects in 3 s and weights backend-1 x4, run as it is,
    does what it is told and fails the checklist: never out of rotation (ejection), 3 s per
    request on the dead backend (a 2 s failing-latency objective), an uneven split. failover's
    first round holds all of it (the crash loop's second round repeats it)."""
    failover = Runner(broken_balancer, load_scenario(str(failover_first_round(tmp_path))), seed=1,
                      objective_overrides={"failing_latency": "2s"}).run()
    distribution = Runner(broken_balancer, load_scenario("distribution"), seed=1).run()
    negative_control.observe(failover, distribution)
    checks = by_name(failover)
    ejection = objective(checks["ejection backend-1"], "ejection")
    assert ejection.verdict is Verdict.FAIL and "never" in ejection.measured, ejection
    assert objective(checks["latency"], "failing_latency").verdict is Verdict.FAIL
    even = objective(by_name(distribution)["distribution"], "even_distribution")
    assert even.verdict is Verdict.FAIL and "backend-1" in even.measured, even


@pytest.mark.covers("check:availability", "objective:availability")
def test_availability_fails_without_retries(no_retries: Lab, negative_control,
                                           tmp_path: Path) -> None:
    """Without proxy_next_upstream clients see the kill, run as it is: the errors the
    configuration implies (conformance), which fail the checklist's 99.9% availability
    (failover's first round: one kill shows it)."""
    run = Runner(no_retries, load_scenario(str(failover_first_round(tmp_path))), seed=2).run()
    negative_control.observe(run)
    result = by_name(run)
    assert objective(result["availability"], "availability").verdict is Verdict.FAIL


DURABILITY_PROBE = """\
name: durability-probe
description: Kill PostgreSQL (SIGKILL) while clients write, then start it again.
traffic:
  - {client: writes, rate: 20, method: POST, path: /api/messages, writes: true}
steps:
  - wait: 3
  - inject: {fault: kill, target: postgres}
  - heal: {fault: kill, target: postgres}
  - wait: 1
checks:
  - durability: {client: writes}
"""


def test_durability_holds_with_synchronous_commit(running_lab: Lab) -> None:
    """Acknowledged writes survive a PostgreSQL SIGKILL when commits are
    synchronous (the default)."""
    result = by_name(Runner(running_lab, parse_scenario(DURABILITY_PROBE, "probe"), seed=3).run())
    assert result["durability"].verdict is Verdict.PASS, result["durability"]


@pytest.mark.covers("check:durability", "objective:lost_writes")
def test_durability_fails_with_asynchronous_commit(
        engine: Engine, lab_images: dict[str, str], negative_control) -> None:
    """With synchronous_commit=off a PostgreSQL SIGKILL loses acknowledged writes,
    and the check says so."""
    postgres = {"synchronous_commit": False, "wal_writer_delay_ms": 10_000}
    with started(engine, "async-commit", postgres=postgres) as lab:
        run = Runner(lab, parse_scenario(DURABILITY_PROBE, "probe"), seed=3).run()
    negative_control.observe(run)
    result = by_name(run)
    assert result["durability"].verdict is Verdict.FAIL, result["durability"]
    assert result["durability"].details[0].startswith("lost acknowledged writes:")
    assert objective(result["durability"], "lost_writes").verdict is Verdict.FAIL


def test_faults_are_healed_when_a_step_fails(running_lab: Lab) -> None:
    """A run that errors mid-way unfreezes, heals the partition and removes its sidecar."""
    scenario = parse_scenario("""\
name: broken-step
description: Inject two faults, then heal one that was never injected.
traffic:
  - {client: reads, rate: 10}
steps:
  - inject: {fault: partition, target: backend-2}
  - inject: {fault: freeze, target: backend-3}
  - heal: {fault: kill, target: backend-1}
checks:
  - availability
""", "broken-step")
    with pytest.raises(LabError, match="no such fault is active"):
        Runner(running_lab, scenario, seed=4).run()
    assert running_lab.inspect("backend-3").status == "running"
    assert not sidecars(running_lab.engine, running_lab)
    running_lab.wait_all_ready(60)


def _start_run(lab: Lab, scenario_file: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lab", "run", str(scenario_file),
                             "--name", lab.name, "--report-dir", str(scenario_file.parent)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_paused(lab: Lab, node: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if lab.inspect(node).status == "paused" and sidecars(lab.engine, lab):
            return
        time.sleep(0.1)
    raise AssertionError(f"{node} was never frozen with a partition in place")


HANGING = """\
name: hanging
description: Freeze backend-2 and partition backend-3, then wait a long time.
steps:
  - inject: {fault: partition, target: backend-3}
  - inject: {fault: freeze, target: backend-2}
  - wait: 120
checks:
  - availability
"""


def test_sigterm_heals_every_fault(running_lab: Lab, tmp_path: Path) -> None:
    """SIGTERM to `lab run` heals the freeze and the partition before the process exits."""
    scenario = tmp_path / "hanging.yaml"
    scenario.write_text(HANGING)
    process = _start_run(running_lab, scenario)
    try:
        _wait_paused(running_lab, "backend-2", process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 130
    finally:
        process.kill()
    assert running_lab.inspect("backend-2").status == "running"
    assert not sidecars(running_lab.engine, running_lab)
    running_lab.wait_all_ready(60)


def test_next_run_heals_what_a_sigkilled_run_left(running_lab: Lab, tmp_path: Path) -> None:
    """After SIGKILL mid-fault the node stays frozen; the next run unfreezes it
    and removes the sidecar."""
    scenario = tmp_path / "hanging.yaml"
    scenario.write_text(HANGING)
    process = _start_run(running_lab, scenario)
    try:
        _wait_paused(running_lab, "backend-2", process)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        process.kill()
    assert running_lab.inspect("backend-2").status == "paused"
    result = Runner(running_lab, load_scenario("distribution"), seed=5).run()
    # The run heals from the lab's own fault record before it starts, naming
    # the dead run that left each fault and what undoing it took.
    # The freeze is healed from its record, or, when the SIGKILL came between the pause and
    # the record's write, found paused and unfrozen by the leftover repair.
    assert any(note == "unfroze backend-2" or (
        note.startswith("healed the recorded freeze on backend-2") and note.endswith("unfrozen"))
        for note in result.notes), result.notes
    assert any("partition on backend-3" in note and "sidecar removed" in note
               for note in result.notes), result.notes
    assert result.verdict is Verdict.PASS, result.checks
    assert not sidecars(running_lab.engine, running_lab)


def test_run_cli_writes_json_and_exits_by_verdict(running_lab: Lab, tmp_path: Path) -> None:
    """`lab run --json` prints the result and writes result.json;
    a check that cannot decide exits 1."""
    ok = runner.invoke(app, ["run", "distribution", "--name", running_lab.name, "--json",
                             "--seed", "11", "--report-dir", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    document = json.loads(ok.stdout)[0]
    assert document["schema"] == 1 and document["verdict"] == "pass" and document["seed"] == 11
    assert ({"name", "verdict", "measured", "expected", "derivation", "values"}
            <= set(document["checks"][0]))
    assert document["history"]["requests"] and document["history"]["access_log"]
    assert list(tmp_path.glob("*-distribution-11/result.json"))
    undecidable = tmp_path / "too-few.yaml"
    shipped = (Path(__file__).parents[2] / "scenarios" / "distribution.yaml").read_text()
    # Unknown whatever the sample: two seconds of traffic decide it as well as fifteen.
    undecidable.write_text(shipped.replace("{client: reads}",
                                           "{client: reads, min_requests: 100000}")
                           .replace("- wait: 15", "- wait: 2"))
    result = runner.invoke(app, ["run", str(undecidable), "--name", running_lab.name,
                                 "--report-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output


def test_bad_scenario_starts_nothing(engine: Engine, tmp_path: Path) -> None:
    """A scenario naming an unknown node exits 2 with its name, before any container exists."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(HANGING.replace("target: backend-3", "target: backend-7"))
    name = session_lab_name("never")
    result = runner.invoke(app, ["run", str(bad), "--name", name])
    assert result.exit_code == 2
    assert "unknown node 'backend-7'" in result.stderr
    assert (not engine.list_containers({LABEL_LAB: name})
            and not engine.network_exists(f"lab-{name}"))


def test_traffic_never_leaves_loopback(running_lab: Lab) -> None:
    """Every endpoint the lab hands its clients is a 127.0.0.1 address."""
    endpoints = running_lab.endpoints
    for value in (endpoints.nginx_http, endpoints.nginx_https, endpoints.redis_url,
                  endpoints.postgres_dsn, endpoints.pgbouncer_dsn, endpoints.pgbouncer_admin_dsn):
        assert "@127.0.0.1:" in value or "//127.0.0.1:" in value, value
    assert httpx.get(f"{endpoints.nginx_http}/health").status_code == 200
    assert os.environ.get("TESTCONTAINERS_RYUK_DISABLED") == "true"


@pytest.mark.covers("check:lock-exclusivity", "check:jobs-paused", "check:lock-holders",
                    "objective:duplicate_job_runs")
def test_exclusivity_and_pause_fail_without_locks(
        engine: Engine, lab_images: dict[str, str], negative_control) -> None:
    """Backends that run jobs without locks overlap, run ticks twice, and run while Redis is down;
    the duplicate runs fail the zero-duplicates objective."""
    with started(engine, "unlocked", backend={"locking": False}) as lab:
        run = Runner(lab, load_scenario("redis-outage"), seed=8).run()
    negative_control.observe(run)
    result = by_name(run)
    exclusivity = result["lock-exclusivity"]
    assert exclusivity.verdict is Verdict.FAIL, exclusivity
    assert dict(exclusivity.values)["duplicate_ticks"] > 0
    assert objective(exclusivity, "duplicate_job_runs").verdict is Verdict.FAIL
    paused = result["jobs-paused"]
    assert paused.verdict is Verdict.FAIL, paused
    holders = result["lock-holders"]
    assert holders.verdict is Verdict.FAIL, holders
    assert any("Redis named no holder while running" in d for d in holders.details), holders.details


@pytest.mark.covers("check:fencing", "objective:duplicate_job_runs")
def test_fencing_fails_when_switched_off(engine: Engine, lab_images: dict[str, str],
                                         negative_control) -> None:
    """With fencing off, the frozen holder's stale write is accepted: that is what the running
    configuration does (conformance passes, the stale write shown), and it fails the
    zero-duplicates objective."""
    scenario = load_scenario("lock-holder-freeze")
    backend = {"fencing": False, "job_duration_s": 1.5, "lock_ttl_s": 3.0}
    with started(engine, "unfenced", backend=backend) as lab:
        run = Runner(lab, scenario, seed=9).run()
    negative_control.observe(run)
    fencing = by_name(run)["fencing"]
    assert fencing.verdict is Verdict.PASS, fencing
    assert any("not fenced" in d for d in fencing.details), fencing.details
    assert objective(fencing, "duplicate_job_runs").verdict is Verdict.FAIL, fencing.objectives


@pytest.mark.covers("check:lock-exclusivity", "check:lock-holders", "objective:duplicate_job_runs")
def test_exclusivity_fails_with_a_ttl_shorter_than_the_job_and_no_renewal(
        engine: Engine, lab_images: dict[str, str], negative_control) -> None:
    """A 1 s lease that is never renewed, on a 3 s job: the next tick's node runs while
    the first still works."""
    backend = {"lock_renewal": False, "lock_ttl_s": 1.0, "job_duration_s": 3.0}
    with started(engine, "short-ttl", backend=backend) as lab:
        run = Runner(lab, load_scenario("lock-exclusivity"), seed=18).run()
    negative_control.observe(run)
    result = by_name(run)
    exclusivity, holders = result["lock-exclusivity"], result["lock-holders"]
    # The configuration says so before any traffic, and the measurement confirms it.
    assert any(p.objective == "duplicate_job_runs" and p.reachable is False
               for p in run.predictions)
    assert objective(exclusivity, "duplicate_job_runs").verdict is Verdict.FAIL
    assert exclusivity.verdict is Verdict.FAIL, exclusivity
    assert dict(exclusivity.values)["overlaps"] > 0, exclusivity
    assert holders.verdict is Verdict.FAIL, holders
    assert dict(holders.values)["two_holder_samples"] > 0, holders


def test_second_run_prediction_fails_when_redis_persists_where_the_claim_says_not(
        engine: Engine, lab_images: dict[str, str]) -> None:
    """A Redis with persistence keeps the lock across a restart: no second run,
    where the claimed config predicts one.

    Only a claim shows this: run as it is, a persistent Redis predicts no second run and gives
    none, and no objective attaches to the check (docs/objectives.md). It is kept for what it
    shows, and does not count for the gate (tests/unit/test_registry.py names the exemption)."""
    scenario = load_scenario("redis-restart-mid-job")
    claim = claimed(LabConfig().with_overrides("backend", **scenario.lab["backend"]))
    with started(engine, "persistent-redis", redis={"persistence": True}, **scenario.lab) as lab:
        result = by_name(Runner(lab, scenario, seed=19, claimed=claim).run())
    restart = result["lock-after-store-restart"]
    assert restart.verdict is Verdict.FAIL, restart
    assert "no second run" in " ".join(restart.details), restart.details


@pytest.mark.covers("check:lock-takeover", "objective:lock_takeover")
def test_takeover_fails_when_the_ttl_is_longer_than_the_objective_allows(
        engine: Engine, lab_images: dict[str, str], negative_control) -> None:
    """Locks that live 12 s, run as they are: the takeover after a crash comes when the lease
    runs out (conformance), too slow for a 10 s takeover objective."""
    with started(engine, "long-ttl", backend={"job_duration_s": 1.5, "lock_ttl_s": 12.0}) as lab:
        run = Runner(lab, load_scenario("lock-holder-crash"), seed=10,
                     objective_overrides={"lock_takeover": "10s"}).run()
    negative_control.observe(run)
    takeover = by_name(run)["lock-takeover"]
    assert takeover.verdict is Verdict.PASS, takeover
    assert objective(takeover, "lock_takeover").verdict is Verdict.FAIL, takeover.objectives


def test_network_faults_apply_and_heal_without_leftovers(running_lab: Lab) -> None:
    """Loss, a one-way partition of one link and a throttle are in place while
    injected and gone after heal."""
    from lab.faults import FaultSpec, make_fault
    from lab.faults.base import LinkParams, LossParams, ThrottleParams
    from lab.faults.network import Sidecar

    specs = [FaultSpec("loss", LossParams(target="backend-2", percent=30.0)),
             FaultSpec("partition", LinkParams(target="backend-2", peers=("pgbouncer",),
                                               direction="out")),
             FaultSpec("throttle", ThrottleParams(target="backend-2", rate="2mbit"))]
    faults = [make_fault(spec, running_lab) for spec in specs]
    looker = Sidecar(running_lab.engine, running_lab.name, running_lab.sidecar_image(), "backend-2")
    try:
        for fault in faults:
            fault.inject()
        rules = looker.sh("iptables -S; tc qdisc show dev eth0")
        pgbouncer_ip = next(ip for ip, node in running_lab.addresses().items()
                            if node == "pgbouncer")
        # iptables prints the probability in its own rounding (0.2999...).
        assert re.search(r"--probability 0\.(29|30)", rules), rules
        assert f"-A LF_PARTITION_OUT -d {pgbouncer_ip}/32 -j DROP" in rules
        assert "LF_PARTITION_IN -s" not in rules          # one way only
        assert "tbf" in rules and "rate 2Mbit" in rules
    finally:
        for fault in faults:
            fault.heal()
    after = looker.sh("iptables -S; tc qdisc show dev eth0")
    looker.close()
    assert "LF_" not in after and "tbf" not in after
    assert sidecars(running_lab.engine, running_lab) == []
