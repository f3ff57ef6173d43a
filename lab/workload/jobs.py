"""The scheduled jobs' own records, read straight from PostgreSQL after a run.

The backends write ``job_runs`` (one row per execution, ``finished_at`` NULL until it ends)
and ``fencing_rejections`` (one row per side effect refused for a stale token); see
``images/backend/lab_backend/db.py``. They are read through PostgreSQL's published
127.0.0.1 port, not PgBouncer, so a pooler fault cannot hide them. Timestamps become epoch
seconds with ``EXTRACT(EPOCH ...)``, the clock every other history record uses.
"""

from __future__ import annotations

import psycopg

from lab.history import FencingRejection, JobRun

CONNECT_TIMEOUT_S = 5

_JOB_RUNS = """
SELECT id, job, node, fencing_token, tick,
       EXTRACT(EPOCH FROM started_at)::float8,
       EXTRACT(EPOCH FROM finished_at)::float8,
       outcome
FROM job_runs
WHERE started_at >= to_timestamp(%s)
ORDER BY started_at, id
"""

_FENCING_REJECTIONS = """
SELECT job, node, token, last_token, EXTRACT(EPOCH FROM at)::float8
FROM fencing_rejections
WHERE at >= to_timestamp(%s)
ORDER BY at, id
"""


def _connect(dsn: str) -> psycopg.Connection:
    # client_encoding: text columns come back as str even from a SQL_ASCII database.
    return psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                           client_encoding="utf8")


def read_job_runs(dsn: str, since: float) -> list[JobRun]:
    """Every job run started at or after ``since`` (epoch seconds), oldest first."""
    with _connect(dsn) as conn:
        rows = conn.execute(_JOB_RUNS, (since,)).fetchall()
    return [JobRun(id=int(id_), job=job, node=node,
                   fencing_token=None if token is None else int(token), tick=int(tick),
                   started_at=float(started), finished_at=None if finished is None else float(finished),
                   outcome=outcome)
            for id_, job, node, token, tick, started, finished, outcome in rows]


def read_fencing_rejections(dsn: str, since: float) -> list[FencingRejection]:
    """Every fencing rejection recorded at or after ``since`` (epoch seconds), oldest first."""
    with _connect(dsn) as conn:
        rows = conn.execute(_FENCING_REJECTIONS, (since,)).fetchall()
    return [FencingRejection(job=job, node=node, token=int(token), last_token=int(last),
                             at=float(at))
            for job, node, token, last, at in rows]
