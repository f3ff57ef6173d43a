"""Graceful shutdown of a backend inside the lab: drain, finish, release, exit in time."""

from __future__ import annotations

import time

import psycopg
import pytest

from .conftest import wait_nginx_healthy

pytestmark = pytest.mark.docker

NODE = "backend-3"


def test_sigterm_drains_then_stops_within_the_stop_timeout(running_lab, http):
    """SIGTERM turns readiness 503 at once, then the backend exits cleanly well within budget."""
    stop_timeout = running_lab.config.backend.stop_timeout_s
    try:
        # PID 1 is the Python process (exec-form CMD), so this is what `docker stop` sends.
        code, output = running_lab.exec(NODE, ["sh", "-c", "kill -TERM 1"])
        assert code == 0, output
        code, output = running_lab.exec(NODE, ["lab-probe", "/health/ready"])
        assert code == 1 and "draining" in output, output
        started = time.monotonic()
        running_lab.stop(NODE)
        assert time.monotonic() - started < stop_timeout
        logs = running_lab.logs(NODE, tail=40)
        for line in ("shutdown.draining", "jobs.stopped", "shutdown.locks_released",
                     "shutdown.complete"):
            assert line in logs, f"{line} missing from:\n{logs}"
    finally:
        running_lab.start(NODE)
    wait_nginx_healthy(http)


def test_docker_stop_leaves_no_unfinished_job_run(running_lab, http):
    """A `docker stop` mid-schedule leaves no job_runs row of that node with finished_at NULL."""
    stop_timeout = running_lab.config.backend.stop_timeout_s
    interval = running_lab.config.backend.job_interval_s
    # Stop right after a tick starts, when a run is most likely in progress.
    time.sleep(interval - (time.time() % interval) + 0.05)
    stopped_at = time.time()
    try:
        started = time.monotonic()
        running_lab.stop(NODE)
        assert time.monotonic() - started < stop_timeout
    finally:
        running_lab.start(NODE)
    with psycopg.connect(running_lab.endpoints.postgres_dsn, connect_timeout=5) as conn:
        # Only runs around this stop: earlier tests on the shared lab (a PostgreSQL kill
        # mid-run) may have left unfinished rows of their own.
        unfinished = conn.execute(
            """SELECT job, tick FROM job_runs WHERE node = %s AND finished_at IS NULL
               AND started_at BETWEEN to_timestamp(%s) AND to_timestamp(%s)""",
            (NODE, stopped_at - 2 * interval, stopped_at + 1)).fetchall()
    assert unfinished == []
    wait_nginx_healthy(http)
