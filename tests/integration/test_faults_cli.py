"""`lab break`, `lab heal` and `lab faults` on a running lab: the record outlives the process
that made it, a fresh process heals from it, and what a SIGKILLed `lab break --for` left goes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
from tmux_terminal import LAB
from typer.testing import CliRunner

from lab.cli.app import app
from lab.engine import LABEL_KIND, LABEL_LAB, ContainerSpec
from lab.faults import record as fault_record
from lab.scenarios.loader import parse_scenario
from lab.scenarios.runner import Runner
from lab.topology.lab import Lab
from lab.topology.plan import container_name


def lab_cli(lab: Lab, cwd: Path, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    """`lab ARGS --name LAB` in a fresh process, as typed in a terminal."""
    return subprocess.run([*LAB, *args, "--name", lab.name], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout_s, check=False)


def helpers(lab: Lab) -> list[str]:
    """Every container of the lab that is not a node: sidecars, fault records."""
    return [i.name for i in lab.engine.list_containers({LABEL_LAB: lab.name})
            if i.labels.get(LABEL_KIND) != "node"]


def lf_rules(lab: Lab, node: str) -> str:
    """The lab's iptables chains in a node's network namespace, read by a one-off container."""
    result = lab.engine.run_sidecar(ContainerSpec(
        name=f"lab-{lab.name}-rules-{uuid.uuid4().hex[:6]}", image=lab.sidecar_image(),
        labels={LABEL_LAB: lab.name, LABEL_KIND: "sidecar"}, cap_add=("NET_ADMIN",),
        network_mode=f"container:{container_name(lab.name, node)}",
        command=("sh", "-c", "iptables -S; iptables -t nat -S")), timeout_s=30)
    assert result.exit_code == 0, result.output
    return "\n".join(line for line in result.output.splitlines() if "LF_" in line)


@pytest.fixture
def healed(running_lab: Lab, tmp_path: Path):
    """The shared lab, healed and ready again whatever the test did."""
    yield running_lab
    lab_cli(running_lab, tmp_path, "heal", "--all")
    running_lab.wait_all_ready(90)


@pytest.mark.parametrize(("node", "fault"), [("backend-2", ["partition", "peers=nginx"]),
                                             ("backend-3", ["freeze"])])
def test_heal_removes_what_a_sigkilled_break_for_left(healed: Lab, tmp_path: Path, node: str,
                                                      fault: list[str]) -> None:
    """`lab break --for 60s` killed with SIGKILL never heals; its record stays, and `lab heal`
    in a fresh process rebuilds the fault from it and undoes it: rules, sidecar, record."""
    lab = healed
    breaker = subprocess.Popen([*LAB, "break", node, *fault, "--for", "60s", "--name", lab.name],
                               cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not fault_record.read(lab) and time.monotonic() < deadline:
            time.sleep(0.2)
        (record,) = fault_record.read(lab)
        assert (record.kind, record.target) == (fault[0], node) and record.until is not None
    finally:
        os.kill(breaker.pid, signal.SIGKILL)
        breaker.wait(10)
    time.sleep(1)
    (left,) = fault_record.read(lab)
    assert left == record                                   # nothing healed it
    if fault[0] == "partition":
        assert "LF_PARTITION" in lf_rules(lab, node)
    else:
        assert lab.inspect(node).status == "paused"
    listed = lab_cli(lab, tmp_path, "faults", "--json")
    (shown,) = json.loads(listed.stdout)
    assert shown["target"] == node and shown["state"] == "in place"

    result = lab_cli(lab, tmp_path, "heal", node)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{node}: healed {fault[0]}" in result.stdout
    assert fault_record.read(lab) == [] and helpers(lab) == []
    assert lab.inspect(node).status == "running"
    if fault[0] == "partition":
        assert lf_rules(lab, node) == ""
    again = lab_cli(lab, tmp_path, "heal", node)
    assert again.returncode == 0 and f"{node}: nothing to heal" in again.stdout


def test_break_for_heals_on_time_and_stacks(healed: Lab, tmp_path: Path) -> None:
    """Two faults on one node stack; `--for` heals its own when the time is up, the other stays
    until `lab heal`."""
    lab = healed
    first = lab_cli(lab, tmp_path, "break", "backend-1", "loss", "percent=20", "direction=in")
    assert first.returncode == 0, first.stderr
    assert "undo: lab heal backend-1" in first.stdout
    timed = lab_cli(lab, tmp_path, "break", "backend-1", "latency", "delay_ms=50", "--for", "2s")
    assert timed.returncode == 0, timed.stderr
    assert "backend-1: healed latency" in timed.stdout
    (left,) = fault_record.read(lab)
    assert left.kind == "loss" and "LF_LOSS" in lf_rules(lab, "backend-1")
    twice = lab_cli(lab, tmp_path, "break", "backend-1", "loss", "percent=5")
    assert twice.returncode == 2 and "backend-1 already has loss" in twice.stderr
    healing = lab_cli(lab, tmp_path, "heal", "--all")
    assert healing.returncode == 0, healing.stdout + healing.stderr
    assert fault_record.read(lab) == [] and helpers(lab) == []
    assert lf_rules(lab, "backend-1") == "", healing.stdout + healing.stderr


def test_bad_input_on_a_running_lab_exits_2_with_one_line(running_lab: Lab) -> None:
    """An unknown node or peer, or no node to heal: exit 2, one line, nothing changed."""
    runner = CliRunner()
    for argv, message in [
        (["break", "backend-9", "kill"], "UnknownNode: no node named 'backend-9'"),
        (["break", "backend-1", "partition", "peers=nginx,bakend-2"],
         "UnknownNode: no node named 'bakend-2'"),
        (["heal", "backend-9"], "UnknownNode: no node named 'backend-9'"),
        (["heal"], "ConfigError: name the nodes to heal, or give --all"),
    ]:
        result = runner.invoke(app, [*argv, "--name", running_lab.name])
        assert result.exit_code == 2, (argv, result.output)
        assert result.output.strip().splitlines() == [result.output.strip()], result.output
        assert result.output.startswith(message), result.output
    assert fault_record.read(running_lab) == []


FREEZE = """\
name: freeze-briefly
description: freeze backend-3 for a few seconds
steps:
  - inject: {fault: freeze, target: backend-3}
  - wait: 4
  - heal: {fault: freeze, target: backend-3}
checks:
  - availability
"""


def test_a_scenario_runs_faults_show_in_the_record(healed: Lab, tmp_path: Path) -> None:
    """While a scenario's fault is in place, `lab faults` (another process) lists it as the
    scenario's; once healed, the record is gone."""
    lab = healed
    runner = Runner(lab, parse_scenario(FREEZE, "freeze.yaml"), seed=1)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        listed: list = []
        while not listed and time.monotonic() < deadline:
            listed = json.loads(lab_cli(lab, tmp_path, "faults", "--json").stdout or "[]")
            time.sleep(0.3)
        (shown,) = listed
        assert (shown["kind"], shown["target"], shown["by"]["kind"]) == ("freeze", "backend-3",
                                                                          "scenario")
    finally:
        thread.join(120)
    assert fault_record.read(lab) == []


def test_heal_clears_rules_whose_sidecar_someone_removed(healed: Lab, tmp_path: Path) -> None:
    """Removing a fault's sidecar (an orphan cleanup that does not know the record) leaves its
    rules in the node's namespace; `lab faults` says so and `lab heal` still removes them."""
    lab = healed
    assert lab_cli(lab, tmp_path, "break", "backend-2", "loss", "percent=10").returncode == 0
    (record,) = fault_record.read(lab)
    lab.engine.remove_container(record.handover["sidecar"])
    assert "LF_LOSS" in lf_rules(lab, "backend-2")
    (shown,) = json.loads(lab_cli(lab, tmp_path, "faults", "--json").stdout)
    assert shown["state"].startswith("sidecar removed: its rules may remain")
    result = lab_cli(lab, tmp_path, "heal", "backend-2")
    assert result.returncode == 0 and "backend-2: healed loss" in result.stdout, result.stdout
    assert lf_rules(lab, "backend-2") == "" and helpers(lab) == []


CONNECT = ("import socket, sys, time\n"
           "t = time.monotonic()\n"
           "try:\n"
           "    socket.create_connection((sys.argv[1], 8000), timeout=3).close(); r = 'open'\n"
           "except OSError as e:\n"
           "    r = type(e).__name__\n"
           "print(r, round(time.monotonic() - t, 3))\n")


def connect_from(lab: Lab, node: str, target: str) -> tuple[str, float]:
    """A TCP connect to ``target``:8000 from ``node``'s network namespace (a one-off sidecar on
    the lab's own network): how it ended and how long it took."""
    address = next(ip for ip, name in lab.addresses().items() if name == target)
    result = lab.engine.run_sidecar(ContainerSpec(
        name=f"lab-{lab.name}-connect-{uuid.uuid4().hex[:6]}", image=lab.sidecar_image(),
        labels={LABEL_LAB: lab.name, LABEL_KIND: "sidecar"},
        network_mode=f"container:{container_name(lab.name, node)}",
        command=("python3", "-c", CONNECT, address)), timeout_s=30)
    outcome, seconds = result.output.split()[-2:]
    return outcome, float(seconds)


def test_reset_refuses_at_once_where_a_partition_hangs(healed: Lab, tmp_path: Path) -> None:
    """`lab break backend-2 reset` (bare, its defaults): a connect to it is refused at once;
    with `partition` the same connect hangs until its timeout. `lab faults` lists it, `lab heal
    --all` removes its rules and sidecar, and the connect opens again."""
    lab = healed
    broke = lab_cli(lab, tmp_path, "break", "backend-2", "reset")
    assert broke.returncode == 0, broke.stderr
    (shown,) = json.loads(lab_cli(lab, tmp_path, "faults", "--json").stdout)
    assert (shown["kind"], shown["target"], shown["state"]) == ("reset", "backend-2", "in place")
    assert "LF_RESET_IN" in lf_rules(lab, "backend-2")
    outcome, seconds = connect_from(lab, "nginx", "backend-2")
    assert outcome == "ConnectionRefusedError" and seconds < 1.0, (outcome, seconds)
    assert lab_cli(lab, tmp_path, "heal", "--all").returncode == 0

    assert lab_cli(lab, tmp_path, "break", "backend-2", "partition").returncode == 0
    outcome, seconds = connect_from(lab, "nginx", "backend-2")
    assert outcome in ("TimeoutError", "timeout") and seconds >= 2.9, (outcome, seconds)
    healing = lab_cli(lab, tmp_path, "heal", "--all")
    assert healing.returncode == 0, healing.stdout + healing.stderr
    assert fault_record.read(lab) == [] and helpers(lab) == []
    assert lf_rules(lab, "backend-2") == ""
    assert connect_from(lab, "nginx", "backend-2")[0] == "open"


def test_cpu_starve_cuts_the_quota_and_heal_restores_it(healed: Lab, tmp_path: Path) -> None:
    """`lab break backend-3 cpu-starve` (bare: a tenth of a core) holds the container to a CFS
    quota of 1 ms per 10 ms; a CPU-bound loop inside it slows about tenfold; `lab heal --all`
    in a fresh process puts the quota it had back (from the record)."""
    lab = healed
    container = lab.container("backend-3")
    before = lab.engine.cpu_limit(container)
    spin = ["python3", "-c", ("import time; t = time.process_time(); s = time.monotonic()\n"
                              "while time.process_time() - t < 0.2: pass\n"
                              "print(round(time.monotonic() - s, 3))")]
    free = float(lab.engine.exec(container, spin).output.split()[-1])
    broke = lab_cli(lab, tmp_path, "break", "backend-3", "cpu-starve")
    assert broke.returncode == 0, broke.stderr
    limit = lab.engine.cpu_limit(container)
    assert (limit.period_us, limit.quota_us) == (10_000, 1_000), limit
    starved = float(lab.engine.exec(container, spin).output.split()[-1])
    assert starved > 5 * free, (free, starved)
    (shown,) = json.loads(lab_cli(lab, tmp_path, "faults", "--json").stdout)
    assert (shown["kind"], shown["target"]) == ("cpu-starve", "backend-3")
    healing = lab_cli(lab, tmp_path, "heal", "--all")
    assert healing.returncode == 0, healing.stdout + healing.stderr
    assert "backend-3: healed cpu-starve" in healing.stdout
    assert lab.engine.cpu_limit(container).cpus == before.cpus
    assert fault_record.read(lab) == [] and helpers(lab) == []
    # Under a tenth of a core the period grows (the kernel's least quota is 1 ms): 0.02 was
    # silently a tenth before, as Docker raised the quota to 1 ms over the same 10 ms.
    fiftieth = lab_cli(lab, tmp_path, "break", "backend-3", "cpu-starve", "cpus=0.02")
    assert fiftieth.returncode == 0, fiftieth.stderr
    assert "1 ms of CPU per 50 ms period" in " ".join(fiftieth.stdout.split())
    limit = lab.engine.cpu_limit(container)
    assert (limit.period_us, limit.quota_us) == (50_000, 1_000), limit
    assert lab_cli(lab, tmp_path, "heal", "--all").returncode == 0
    assert lab.engine.cpu_limit(container).cpus == before.cpus


def test_process_stop_stops_one_process_while_its_container_runs(healed: Lab,
                                                                 tmp_path: Path) -> None:
    """`lab break pgbouncer process-stop` (bare: the main process) leaves the container running
    with its process stopped (state T); `lab heal --all` in a fresh process continues it from
    the record. A named process that does not run is refused with one line, exit 2."""
    lab = healed
    container = lab.container("pgbouncer")

    def state() -> str:
        return lab.engine.exec(container, ["sh", "-c", "grep State /proc/1/status"]).output

    broke = lab_cli(lab, tmp_path, "break", "pgbouncer", "process-stop")
    assert broke.returncode == 0, broke.stderr
    assert "T (stopped)" in state() and lab.inspect("pgbouncer").status == "running"
    (shown,) = json.loads(lab_cli(lab, tmp_path, "faults", "--json").stdout)
    assert (shown["kind"], shown["target"], shown["state"]) == ("process-stop", "pgbouncer",
                                                                "in place")
    healing = lab_cli(lab, tmp_path, "heal", "--all")
    assert healing.returncode == 0, healing.stdout + healing.stderr
    assert "T (stopped)" not in state()
    assert fault_record.read(lab) == [] and helpers(lab) == []
    missing = lab_cli(lab, tmp_path, "break", "redis", "process-stop", "process=nosuchd")
    assert missing.returncode == 2 and "no process named 'nosuchd' runs in redis" in missing.stderr
    assert fault_record.read(lab) == []


def test_evict_removes_the_lock_keys_and_redis_runs_on(healed: Lab, tmp_path: Path) -> None:
    """`lab break redis evict` (bare: the reference backend's lock keys) removes every
    lab:lock:* key at once and leaves Redis serving; the record says it is done, and `lab heal
    --all` has nothing to undo. Aimed at a node that is not Redis, it is refused, exit 2."""
    lab = healed
    with redis.Redis.from_url(lab.endpoints.redis_url, socket_timeout=5) as client:
        client.set("lab:lock:pytest-probe", "pytest|00|1", px=60_000)
        client.set("pytest:kept", "1", px=60_000)
        broke = lab_cli(lab, tmp_path, "break", "redis", "evict")
        assert broke.returncode == 0, broke.stderr
        assert "lab:lock:pytest-probe" in broke.stdout + broke.stderr
        assert client.get("lab:lock:pytest-probe") is None
        assert client.get("pytest:kept") == b"1"
        (shown,) = json.loads(lab_cli(lab, tmp_path, "faults", "--json").stdout)
        assert (shown["kind"], shown["target"], shown["state"]) == ("evict", "redis",
                                                                    "done: evicted")
        healing = lab_cli(lab, tmp_path, "heal", "--all")
        assert healing.returncode == 0, healing.stdout + healing.stderr
        assert fault_record.read(lab) == [] and helpers(lab) == []
        client.delete("pytest:kept")
    wrong = lab_cli(lab, tmp_path, "break", "backend-1", "evict")
    assert wrong.returncode == 2 and "evict acts on Redis" in wrong.stderr, wrong.stderr
    assert fault_record.read(lab) == []


def test_dns_fails_lookups_inside_the_target_and_heals(healed: Lab, tmp_path: Path) -> None:
    """`lab break backend-1 dns` (bare: mode fail) makes the backend's lookups of its peers fail
    at once while NGINX still answers through it (its open connections go on); mode timeout
    drops the resolver's answers instead of the queries; `lab heal --all` leaves the lookups
    working and no rule or sidecar behind. A mode the fault does not have is refused, exit 2."""
    lab = healed
    container = container_name(lab.name, "backend-1")
    lookup = ["/opt/venv/bin/python", "-c",
              ("import socket, time; t = time.monotonic()\n"
               "try: socket.getaddrinfo('redis', 6379); r = 'ok'\n"
               "except OSError as e: r = 'failed'\n"
               "print(r, round(time.monotonic() - t, 3))")]
    assert lab.engine.exec(container, lookup).output.split()[0] == "ok"
    broke = lab_cli(lab, tmp_path, "break", "backend-1", "dns")
    assert broke.returncode == 0, broke.stderr
    verdict, took = lab.engine.exec(container, lookup).output.split()
    assert verdict == "failed" and float(took) < 2, (verdict, took)
    (shown,) = json.loads(lab_cli(lab, tmp_path, "faults", "--json").stdout)
    assert (shown["kind"], shown["target"], shown["state"]) == ("dns", "backend-1", "in place")
    assert "-A LF_DNS_OUT -d 127.0.0.11/32 -p udp" in lf_rules(lab, "backend-1")
    assert lab_cli(lab, tmp_path, "heal", "--all").returncode == 0
    assert lab.engine.exec(container, lookup).output.split()[0] == "ok"
    assert lab_cli(lab, tmp_path, "break", "backend-1", "dns", "mode=timeout").returncode == 0
    assert "-A LF_DNS_IN -s 127.0.0.11/32 -j DROP" in lf_rules(lab, "backend-1")
    assert lab_cli(lab, tmp_path, "heal", "--all").returncode == 0
    assert lf_rules(lab, "backend-1") == "" and helpers(lab) == []
    wrong = lab_cli(lab, tmp_path, "break", "backend-1", "dns", "mode=lie")
    assert wrong.returncode == 2 and "mode" in wrong.stderr, wrong.stderr
    assert fault_record.read(lab) == []
