"""PostgreSQL through PgBouncer (transaction mode): pool, schema, seed data and queries.

PgBouncer 1.18 in transaction mode cannot carry prepared statements or session state, so
connections use ``prepare_threshold=None`` and everything that must hold together (the
schema's advisory lock, the fenced write) happens inside one transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from lab_backend.logs import event
from lab_backend.security import hash_password, verify_password

# pg_advisory_xact_lock key shared by every backend creating the schema ("LABSCHEM").
SCHEMA_LOCK_KEY = 0x4C4142534348454D
SEED_USERS = ("user1@lab.test", "user2@lab.test", "user3@lab.test")
SEED_CONVERSATIONS = ("General", "Support", "Billing")
MAX_POOL_SIZE = 10
T = TypeVar("T")
# Operations given up on but still unwinding (see ``bounded``); referenced so they finish.
_ABANDONED: set[asyncio.Task] = set()

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS conversations (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    title text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS messages (
    id bigserial PRIMARY KEY,
    conversation_id bigint NOT NULL REFERENCES conversations (id),
    user_id bigint NOT NULL REFERENCES users (id),
    body text NOT NULL,
    node text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS inbound_messages (
    id bigserial PRIMARY KEY,
    sender text NOT NULL,
    recipient text NOT NULL,
    body text NOT NULL,
    node text NOT NULL,
    received_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS job_runs (
    id bigserial PRIMARY KEY,
    job text NOT NULL,
    node text NOT NULL,
    fencing_token bigint,
    tick bigint NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    outcome text NOT NULL
);
CREATE INDEX IF NOT EXISTS job_runs_job_tick ON job_runs (job, tick);
CREATE TABLE IF NOT EXISTS fenced_resource (
    job text PRIMARY KEY,
    last_token bigint NOT NULL,
    last_node text NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS fencing_rejections (
    id bigserial PRIMARY KEY,
    job text NOT NULL,
    node text NOT NULL,
    token bigint NOT NULL,
    last_token bigint NOT NULL,
    at timestamptz NOT NULL
);
"""


def utc_now() -> datetime:
    """The backend's own clock (``time.time()``) as an aware datetime, stored as timestamptz."""
    return datetime.now(UTC)


def make_pool(database_url: str, *, timeout_s: float) -> AsyncConnectionPool:
    """A closed pool whose ``getconn`` waits at most ``timeout_s`` (open it with ``open()``)."""
    return AsyncConnectionPool(
        database_url,
        min_size=1,
        max_size=MAX_POOL_SIZE,
        timeout=timeout_s,
        # Reconnect attempts keep going while the database is away (the pool never gives up
        # for good within a lab run).
        reconnect_timeout=3600,
        max_idle=60,
        # client_encoding: a database initialised without a locale is SQL_ASCII, and psycopg
        # would then return text columns as bytes.
        kwargs={"prepare_threshold": None, "connect_timeout": 2, "application_name": "lab-backend",
                "client_encoding": "utf8"},
        open=False,
        name="lab-backend",
    )


async def answers(database_url: str) -> None:
    """One connection and ``SELECT 1``; raises when the database (through PgBouncer) does not
    answer. Startup asks this before it opens the pool."""
    conn = await psycopg.AsyncConnection.connect(
        database_url, prepare_threshold=None, connect_timeout=2, autocommit=True,
        application_name="lab-backend-startup")
    try:
        await conn.execute("SELECT 1")
    finally:
        await conn.close()


async def ensure_schema(pool: AsyncConnectionPool, seed_password: str) -> None:
    """Create tables and seed users/conversations idempotently. The DDL and the inserts are
    serialised across backends (an advisory lock); checking the stored password hashes is not,
    so three backends starting together check theirs at the same time (scrypt, ~50 ms each:
    under the lock the third backend was ready ~0.5 s after the first)."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        await conn.execute(SCHEMA)
        cur = await conn.execute(
            "SELECT id, email, password_hash FROM users WHERE email = ANY(%s)", (list(SEED_USERS),))
        existing = {row[1]: (row[0], row[2]) for row in await cur.fetchall()}
        # One hash for the seed users that are missing: they share LAB_SEED_PASSWORD, and it is
        # computed while the other backends wait for the lock.
        new_hash = None
        for email in SEED_USERS:
            if email in existing:
                continue
            if new_hash is None:
                new_hash = await asyncio.to_thread(hash_password, seed_password)
            cur = await conn.execute(
                "INSERT INTO users (email, password_hash) VALUES (%s, %s) RETURNING id",
                (email, new_hash))
            (user_id,) = await cur.fetchone()
            for title in SEED_CONVERSATIONS:
                await conn.execute(
                    "INSERT INTO conversations (user_id, title) VALUES (%s, %s)", (user_id, title))
    for email in SEED_USERS:
        if email not in existing:
            continue
        user_id, stored = existing[email]
        if not await asyncio.to_thread(verify_password, seed_password, stored):
            # A reused volume with a new LAB_SEED_PASSWORD: make the password current (unless
            # another backend already did).
            new_hash = await asyncio.to_thread(hash_password, seed_password)
            async with pool.connection() as conn:
                await conn.execute(
                    "UPDATE users SET password_hash = %s WHERE id = %s AND password_hash = %s",
                    (new_hash, user_id, stored))


async def bounded(operation: Awaitable[T], timeout_s: float) -> T:
    """Await a database operation for at most ``timeout_s``; raise TimeoutError after that.

    ``asyncio.timeout`` alone is not enough: a cancelled psycopg query first sends a cancel
    request and then waits for the server (5 s each), so against a frozen PgBouncer the
    caller would hang ~10 s. The operation runs as its own task and is abandoned (cancelled,
    left to unwind in the background; its connection is then discarded by the pool).
    """
    task = asyncio.ensure_future(operation)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:
        _abandon(task)
        raise
    if task in done:
        return task.result()
    _abandon(task)
    raise TimeoutError(f"no answer within {timeout_s}s")


def _abandon(task: asyncio.Task) -> None:
    task.cancel()
    _ABANDONED.add(task)
    task.add_done_callback(_forget)


def _forget(task: asyncio.Task) -> None:
    _ABANDONED.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log "never retrieved"


async def ping(pool: AsyncConnectionPool, timeout_s: float) -> None:
    """One round trip through PgBouncer to PostgreSQL; raises on failure or timeout.

    A pooled connection that PgBouncer dropped while it sat idle (a pooler restart) fails on
    its first use. That says nothing about the database now (readiness answered 503 "database
    failed" seconds after PgBouncer was back), so after a broken connection the pool checks
    its idle ones (``AsyncConnectionPool.check`` discards the dead) and the ping runs once
    more. Bounded by ``timeout_s``. API requests get no such second try: a stale connection
    costs them a 503, as it would in production."""

    async def once() -> bool:
        """True when SELECT 1 answered; False when the connection it got was broken."""
        conn: psycopg.AsyncConnection | None = None
        try:
            async with pool.connection(timeout=timeout_s) as conn:
                await conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            if conn is None or not conn.broken:
                raise
            return False

    async def select_one() -> None:
        if not await once():
            await pool.check()
            if not await once():
                raise psycopg.OperationalError("the database connection broke twice in a row")

    await bounded(select_one(), timeout_s)


@dataclass(frozen=True)
class User:
    """A stored user (password hash included; never serialised to a client)."""

    id: int
    email: str
    password_hash: str


async def find_user(pool: AsyncConnectionPool, email: str) -> User | None:
    """The user with this e-mail, or None."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id, email, password_hash FROM users WHERE email = %s", (email,))
        row = await cur.fetchone()
    return User(*row) if row else None


async def list_conversations(pool: AsyncConnectionPool, user_id: int) -> list[dict]:
    """The user's conversations, oldest first, with their message counts."""
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            """SELECT c.id, c.title, c.created_at,
                      (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)
                          AS message_count
               FROM conversations c WHERE c.user_id = %s ORDER BY c.id""",
            (user_id,))
        rows = await cur.fetchall()
    return [{**row, "created_at": row["created_at"].timestamp()} for row in rows]


async def insert_message(pool: AsyncConnectionPool, user_id: int, conversation_id: int,
                         body: str, node: str) -> int | None:
    """Insert and commit a message; its id, or None when the conversation is not the user's."""
    async with pool.connection() as conn:
        # The pool connection is not autocommit: leaving this block commits, and only then
        # does the caller answer 201.
        cur = await conn.execute(
            """INSERT INTO messages (conversation_id, user_id, body, node, created_at)
               SELECT c.id, c.user_id, %s, %s, %s FROM conversations c
               WHERE c.id = %s AND c.user_id = %s
               RETURNING id""",
            (body, node, utc_now(), conversation_id, user_id))
        row = await cur.fetchone()
        await conn.commit()
    return row[0] if row else None


async def insert_inbound(pool: AsyncConnectionPool, sender: str, recipient: str, body: str,
                         node: str) -> int:
    """Store and commit an inbound SMS delivered by the webhook; its id."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            """INSERT INTO inbound_messages (sender, recipient, body, node, received_at)
               VALUES (%s, %s, %s, %s, %s) RETURNING id""",
            (sender, recipient, body, node, utc_now()))
        (message_id,) = await cur.fetchone()
        await conn.commit()
    return message_id


async def start_job_run(pool: AsyncConnectionPool, job: str, node: str,
                        fencing_token: int | None, tick: int) -> int:
    """Record a run as started (finished_at NULL) and commit; the row id."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            """INSERT INTO job_runs (job, node, fencing_token, tick, started_at, outcome)
               VALUES (%s, %s, %s, %s, %s, 'running') RETURNING id""",
            (job, node, fencing_token, tick, utc_now()))
        (run_id,) = await cur.fetchone()
        await conn.commit()
    return run_id


async def finish_job_run(pool: AsyncConnectionPool, run_id: int, outcome: str) -> None:
    """Mark a run finished with its outcome."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE job_runs SET finished_at = %s, outcome = %s WHERE id = %s",
            (utc_now(), outcome, run_id))
        await conn.commit()


async def fenced_write(pool: AsyncConnectionPool, job: str, node: str, token: int | None,
                       *, fencing: bool) -> bool:
    """The job's side effect; with ``fencing`` a token not above the last accepted is rejected.

    Returns True when the write was applied. A rejection is recorded in
    ``fencing_rejections`` in the same transaction.
    """
    token_value = token if token is not None else 0
    async with pool.connection() as conn:
        if fencing and token is not None:
            cur = await conn.execute(
                """INSERT INTO fenced_resource (job, last_token, last_node, updated_at)
                   VALUES (%s, %s, %s, %s)
                   ON CONFLICT (job) DO UPDATE
                     SET last_token = EXCLUDED.last_token, last_node = EXCLUDED.last_node,
                         updated_at = EXCLUDED.updated_at
                     WHERE fenced_resource.last_token < EXCLUDED.last_token
                   RETURNING last_token""",
                (job, token_value, node, utc_now()))
            applied = await cur.fetchone() is not None
            if not applied:
                await conn.execute(
                    """INSERT INTO fencing_rejections (job, node, token, last_token, at)
                       SELECT %s, %s, %s, last_token, %s FROM fenced_resource WHERE job = %s""",
                    (job, node, token_value, utc_now(), job))
        else:
            # Negative control: the resource believes whoever writes last.
            await conn.execute(
                """INSERT INTO fenced_resource (job, last_token, last_node, updated_at)
                   VALUES (%s, %s, %s, %s)
                   ON CONFLICT (job) DO UPDATE
                     SET last_token = EXCLUDED.last_token, last_node = EXCLUDED.last_node,
                         updated_at = EXCLUDED.updated_at""",
                (job, token_value, node, utc_now()))
            applied = True
        await conn.commit()
    if not applied:
        event("fencing.rejected", job=job, token=token_value, level=logging.WARNING)
    return applied


DatabaseError = (psycopg.Error, OSError)
