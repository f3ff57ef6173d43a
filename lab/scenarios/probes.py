"""The probe registry: samples a ``probe`` step takes now, each recorded into the history.

``security``: answers of every kind with their headers (HTTP and HTTPS) and the certificate
HTTPS serves; ``second-client``: a login burst from the host and, 50 ms later, one from a
container on the lab network (its own address, NGINX's limit key); ``health:<state>``: every
backend's four health endpoints asked directly, labelled with the state the steps so far put
the lab in; ``pool``: 300 clients through PgBouncer while SHOW POOLS and pg_stat_activity are
sampled, then one client more than max_client_conn; ``pool-backends``: the same sampling while
90 HTTP clients on the lab network ask the backends' database-backed API directly;
``exposure``: every lab container's published ports from Docker, and a TCP connect to each on
127.0.0.1.

A probe with an argument is written ``name:argument`` (``health:redis-down``); its argument is
one of the probe's declared choices.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from lab.checks.health import PATHS as HEALTH_PATHS
from lab.errors import ConfigError, LabError
from lab.history import HealthSample, PoolLoadPhase
from lab.registry import Registry
from lab.scenarios.state import RunState
from lab.topology.client import ClientTarget
from lab.workload.backend_load import run_backend_load
from lab.workload.pool_load import PoolSampler, max_client_conn_error, run_pool_load
from lab.workload.security_probe import connect_published, observe_tls, sample_headers


@dataclass(frozen=True)
class ProbeDef:
    """One registered probe: its name, the arguments it takes (none: ``()``), and what it does."""

    name: str
    run: Callable[[RunState, str | None], None]
    summary: str
    choices: tuple[str, ...] = ()


PROBES: Registry[ProbeDef] = Registry("probe")


def parse_probe(text: str) -> tuple[ProbeDef, str | None]:
    """``name`` or ``name:argument`` as a registered probe and its argument; ConfigError
    otherwise."""
    name, sep, argument = text.partition(":")
    probe = PROBES.get(name)
    if probe.choices and not sep:
        raise ConfigError(f"probe {name} needs an argument: {name}:<{'|'.join(probe.choices)}>")
    if sep and argument not in probe.choices:
        takes = f"one of {', '.join(probe.choices)}" if probe.choices else "no argument"
        raise ConfigError(f"probe {name} takes {takes}, not {argument!r}")
    return probe, argument if sep else None


# -- security and exposure ------------------------------------------------------------------------


def _security(state: RunState, argument: str | None) -> None:
    state.tick("sampling headers and TLS")
    lab = state.lab
    ca = lab.ca_pem()
    endpoints = lab.endpoints
    # Plain HTTP as a client meets it: where port 80 only redirects, at the HTTPS it leads to.
    state.history.header_samples.extend(sample_headers(lab.client_target()))
    state.history.header_samples.extend(sample_headers(
        ClientTarget(endpoints.nginx_https, lab.server_name, ca)))
    state.history.tls.append(observe_tls(endpoints.nginx_https, lab.server_name, ca))


def _exposure(state: RunState, argument: str | None) -> None:
    state.tick("reading published ports")
    exposures = state.lab.exposure()
    state.history.exposure.extend(exposures)
    state.history.port_connects.extend(connect_published(exposures))


PROBES.add(ProbeDef("security", _security, "answers of every kind with their headers, over HTTP "
                    "and HTTPS, and the certificate HTTPS serves"))
PROBES.add(ProbeDef("exposure", _exposure, "every lab container's published ports (from Docker) "
                    "and a TCP connect to each on 127.0.0.1"))


# -- the pool -------------------------------------------------------------------------------------


def _pool_sampler(state: RunState) -> PoolSampler:
    endpoints, config = state.lab.endpoints, state.lab.config
    return PoolSampler(endpoints.pgbouncer_admin_dsn, endpoints.postgres_dsn, config.postgres.user,
                       config.postgres.database)


def _record_pool(state: RunState, sampler: PoolSampler, phase: PoolLoadPhase) -> None:
    history = state.history
    history.pool_samples.extend(sampler.samples)
    history.server_activity.extend(sampler.activity)
    history.pool_stats.extend(s for s in (phase.stats_before, phase.stats_after) if s is not None)
    history.pool_phases.append(phase)


def _pool(state: RunState, argument: str | None, clients: int = 300,
          duration_s: float = 8.0) -> None:
    """Many more clients than the pool through PgBouncer, sampled all along; then the exact
    error a client past max_client_conn gets."""
    state.tick(f"pool: {clients} clients")
    endpoints = state.lab.endpoints
    with _pool_sampler(state) as sampler:
        before = sampler.stats()
        load = run_pool_load(endpoints.pgbouncer_dsn, clients=clients, duration_s=duration_s)
        ended = time.time()
        # Waiters drain after the load ends; the last samples must show it.
        state.sleep(1.0)
        after = sampler.stats()
    _record_pool(state, sampler, PoolLoadPhase(
        "direct", ended - load.duration_s, ended, load.clients, load.transactions, load.errors,
        before, after, own_connections=sampler.own_connections))
    state.notes.append(f"pool load: {load.clients} clients, {load.transactions} transactions "
                       f"({load.transactions_per_s:.0f}/s), {load.errors} errors")
    # The real limit, not the expected one: the probe exercises what runs.
    limit = state.lab.config.pgbouncer.max_client_conn
    state.tick("pool: max_client_conn")
    error = max_client_conn_error(endpoints.pgbouncer_dsn, limit)
    state.notes.append(f"a client past max_client_conn ({limit}) gets: {error}")


def _pool_backends(state: RunState, argument: str | None, clients: int = 90,
                   duration_s: float = 6.0) -> None:
    """Many HTTP clients on the backends' database-backed API, from a container on the lab
    network (through NGINX the api zone would reject one address's concurrent requests),
    while PgBouncer and PostgreSQL are sampled: PgBouncer's clients are the backends' pools."""
    state.tick(f"pool: {clients} HTTP clients on the backends")
    token = state.login()
    lab = state.lab
    backends = [node for node, role in lab.roles.items() if role == "backend"]
    with _pool_sampler(state) as sampler:
        before = sampler.stats()
        load = run_backend_load(lab.run_client, backends, lab.backend_port, token, clients=clients,
                                duration_s=duration_s)
        state.sleep(1.0)
        after = sampler.stats()
    _record_pool(state, sampler, PoolLoadPhase(
        "backends", load.started_at, load.ended_at, load.clients, load.requests, load.errors,
        before, after, load.statuses, sampler.own_connections))
    statuses = ", ".join(f"{status} x{count}" for status, count in load.statuses)
    state.notes.append(f"pool load through the backends: {load.clients} HTTP clients, "
                       f"{load.requests} answers ({load.requests_per_s:.0f}/s): {statuses}")


PROBES.add(ProbeDef("pool", _pool, "300 clients through PgBouncer while SHOW POOLS and "
                    "pg_stat_activity are sampled, then one client past max_client_conn"))
PROBES.add(ProbeDef("pool-backends", _pool_backends, "90 HTTP clients on the backends' API from "
                    "the lab network while PgBouncer and PostgreSQL are sampled"))


# -- health ---------------------------------------------------------------------------------------

HEALTH_STATES = ("healthy", "redis-down", "database-down")


def _health(state: RunState, expectation: str | None) -> None:
    """Every backend's four health endpoints, asked directly (docker exec, not NGINX)."""
    assert expectation is not None  # parse_probe requires one of HEALTH_STATES
    state.tick(f"health probe ({expectation})")
    script = "; ".join(f"lab-probe {path}" for path in HEALTH_PATHS)
    lab = state.lab

    def one(node: str) -> list[HealthSample]:
        result = lab.exec(node, ["sh", "-c", script])
        lines = result.output.strip().splitlines()
        samples = []
        for path, line in zip(HEALTH_PATHS, lines + [""] * len(HEALTH_PATHS), strict=False):
            status, _, body = line.partition(" ")
            samples.append(HealthSample(time.time(), node, path,
                                        int(status) if status.isdigit() else None,
                                        body if status.isdigit() else line, expectation))
        return samples

    backends = [node for node, role in lab.roles.items() if role == "backend"]
    with ThreadPoolExecutor(max_workers=len(backends)) as pool:
        for samples in pool.map(one, backends):
            state.history.health_samples.extend(samples)


PROBES.add(ProbeDef("health", _health, "every backend's four health endpoints, asked directly, "
                    "labelled with the state the lab is in", choices=HEALTH_STATES))


# -- a second client ------------------------------------------------------------------------------


def _host_login_burst(target: ClientTarget, burst: int, at: float) -> list[int | str]:
    """``burst`` concurrent logins through NGINX's published port, sent at ``at`` (epoch s)."""
    with target.httpx_client(timeout=5, limits=httpx.Limits(max_connections=burst)) as client:
        time.sleep(max(0.0, at - time.time()))

        def one(_: int) -> int | str:
            try:
                return client.post("/api/auth/login", content=b"{}").status_code
            except httpx.HTTPError as exc:
                return type(exc).__name__
        with ThreadPoolExecutor(max_workers=burst) as pool:
            return sorted(pool.map(one, range(burst)), key=str)


def _second_client(state: RunState, argument: str | None, burst: int = 8, lead_s: float = 2.0,
                   gap_s: float = 0.05) -> None:
    """A login burst from the host, then one from a container on the lab network (its own
    address, so its own limit_req key) ``gap_s`` later.

    Limits kept per client give the second burst a fresh allowance; a zone keyed on anything
    shared (the server name, a header) has just been filled by the first burst and rejects
    the second. Both start on the shared wall clock (containers read the host's): ``lead_s``
    covers the container's start, so the gap does not depend on it.
    """
    state.tick("second client")
    target = state.lab.client_target("/api/auth/login")
    fire_at = time.time() + lead_s
    # Container to container on the lab's own network: NGINX sees the client's address. Where
    # port 80 only redirects, it goes to 443 as the TLS server's name, as the host's does.
    connect = (f"http.client.HTTPSConnection('nginx', 443, timeout=5, context=ctx)\n"
               f"    c.sock = ctx.wrap_socket(socket.create_connection(('nginx', 443), 5), "
               f"server_hostname={target.server_name!r})\n" if target.tls else
               "http.client.HTTPConnection('nginx', 80, timeout=5)\n")
    script = (
        "import http.client, socket, ssl, time, concurrent.futures as f\n"
        + (f"ctx = ssl.create_default_context(cadata={(target.ca_pem or b'').decode()!r})\n"
           if target.tls else "")
        + "def one(_):\n"
        f"    c = {connect}"
        "    c.request('POST', '/api/auth/login', body=b'{}', headers="
        f"{target.host_header!r})\n"
        "    return c.getresponse().status\n"
        f"time.sleep(max(0.0, {fire_at + gap_s!r} - time.time()))\n"
        f"late = time.time() - {fire_at + gap_s!r}\n"
        f"with f.ThreadPoolExecutor({burst}) as pool:\n"
        f"    statuses = sorted(pool.map(one, range({burst})))\n"
        "print(socket.gethostbyname(socket.gethostname()), round(late * 1000), statuses)\n")
    with ThreadPoolExecutor(max_workers=1) as host:
        first = host.submit(_host_login_burst, target, burst, fire_at)
        result = state.lab.run_client(["python3", "-c", script], timeout_s=lead_s + 30)
        host_statuses = first.result()
    if result.exit_code != 0:
        raise LabError(f"the second client failed: {result.output.strip()[-300:]}")
    address, late_ms, statuses = result.output.strip().split(" ", 2)
    lateness = f", {late_ms} ms late" if int(late_ms) > 0 else ""
    state.notes.append(f"login bursts of {burst}: the host's (its own address) statuses "
                       f"{host_statuses}; {gap_s * 1000:.0f} ms later the second client's "
                       f"({address}{lateness}) {statuses}")


PROBES.add(ProbeDef("second-client", _second_client, "a login burst from the host, then one from "
                    "a second client with its own address 50 ms later"))
