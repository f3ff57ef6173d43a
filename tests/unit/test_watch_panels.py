"""`lab watch`'s panels: a snapshot in, the text a class reads on the projector out."""

from __future__ import annotations

import re

from rich.console import Console

from lab.expectations import UpstreamPolicy
from lab.watch.model import (
    BackendView,
    FaultView,
    NginxView,
    NodeView,
    PoolView,
    ProbeView,
    Snapshot,
    UpstreamView,
)
from lab.watch.panels import faults_panel, nginx_panel, nodes_panel, pool_panel, probe_panel

NOW = 1_700_000_000.0


def _text(renderable: object) -> str:
    console = Console(width=160, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def _snapshot() -> Snapshot:
    backends = tuple(BackendView(name=f"backend-{i}", answered=0 if i == 1 else 90,
                                 share=0.0 if i == 1 else 0.5, per_s=0.0 if i == 1 else 10.0,
                                 series=(7,) * 20 + (0,) * 10 if i == 1 else (7,) * 30,
                                 last_ok_at=NOW - (12.0 if i == 1 else 0.1)) for i in (1, 2, 3))
    fault = FaultView(target="backend-1", kind="kill", params="", since=NOW - 12, by="lab break",
                      state="in place")
    upstreams = (UpstreamView(name="backend-1", tries=1, failed=1, last_try_at=NOW - 2,
                              fault_since=NOW - 12, ejected_after_s=1.21, ejection_settled=True),
                 UpstreamView(name="backend-2", tries=90, failed=0, last_try_at=NOW - 0.1),
                 UpstreamView(name="backend-3", tries=90, failed=0, last_try_at=NOW - 0.1))
    return Snapshot(
        at=NOW, lab="class", ends_at=NOW + 600,
        nodes=(NodeView(name="backend-1", role="backend", state="exited", ready=False,
                        detail="exited"),
               NodeView(name="redis", role="redis", state="running", ready=True,
                        detail="PING answered")),
        faults=(fault,),
        probe=ProbeView(rate_per_s=20, path="/health", window_s=10, sent=180, ok=180, failed=0,
                        unknown=0, statuses=(("200", 180),), p50_ms=3.2, p99_ms=1004.0,
                        backends=backends, total=4000),
        nginx=NginxView(window_s=10, requests=180, requests_per_s=20.0, retried=1,
                        no_live_upstream=0, statuses=(("200", 180),), upstreams=upstreams),
        stub_status=None, locks=None,
        pool=PoolView(at=NOW, cl_active=6, cl_waiting=2, sv_active=3, sv_idle=2, servers=5,
                      maxwait_s=0.25))


def test_a_killed_backend_reads_as_down_with_its_ejection() -> None:
    """Exited and not ready; no answers this second; NGINX's view has when it stopped trying,
    beside the bound the configuration predicts at NGINX's own request rate."""
    snap = _snapshot()
    nodes = _text(nodes_panel(snap))
    assert re.search(r"backend-1\s+exited\s+no", nodes)
    probe = _text(probe_panel(snap))
    assert re.search(r"backend-1\s+0%\s+0\s", probe) and "12.0 s ago" in probe
    assert "p99 1.00 s" in probe
    policy = UpstreamPolicy(name="backend", servers=("backend-1", "backend-2", "backend-3"),
                            max_fails=3, fail_timeout_s=10, connect_timeout_s=1,
                            read_timeout_s=5, next_upstream=("error", "timeout"), zone=True,
                            worker_processes=1, balancing="round_robin")
    nginx = _text(nginx_panel(snap, policy))
    assert "ejected +1.21 s after the fault (predicted <= 1.45 s at 20 req/s)" in nginx
    assert "1 retried on another server" in nginx


def test_faults_and_the_pool() -> None:
    """The record's fault with its age and origin; PgBouncer's waiting clients and pool use."""
    snap = _snapshot()
    faults = _text(faults_panel(snap))
    assert "backend-1" in faults and "kill" in faults and "(12 s)" in faults
    assert "lab break" in faults and "in place" in faults
    pool = _text(pool_panel(snap, 30))
    assert "waiting 2" in pool and "server connections 5 of 30" in pool
