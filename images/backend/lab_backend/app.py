"""The Starlette application: health, auth, conversations, messages, webhook, admin locks.

Answers a client can rely on: malformed JSON 400, missing or bad token 401, body over
64 KiB 413, unknown route 404, a dependency that does not answer in time 503 — never a
500 for a client's mistake and never a hang. Every response carries ``X-Backend-Id``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from psycopg_pool import AsyncConnectionPool, PoolTimeout
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lab_backend import db, security
from lab_backend.config import Settings
from lab_backend.jobs import JobScheduler
from lab_backend.locks import LockService
from lab_backend.logs import event

T = TypeVar("T")

# A hash to check against when the e-mail is unknown, so both paths cost one KDF. Written
# out: computing it at import cost every backend start one scrypt (~50 ms of CPU, three
# backends at once). It is hash_password("not-a-real-password", salt=b"\0" * 16), which
# tests/backend/test_app_unit.py checks.
_DUMMY_HASH = ("scrypt$16384$8$1$00000000000000000000000000000000$"
               "1e823d01d1c304024ead91f6a5eb45ea36baee659a6023ee194a2824822924e8")


class ClientError(Exception):
    """A request the client got wrong; becomes a JSON error with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class DependencyUnavailable(Exception):
    """The database or Redis did not answer in time; becomes 503."""

    def __init__(self, dependency: str, reason: object):
        super().__init__(f"{dependency}: {reason or type(reason).__name__}")
        self.dependency = dependency


@dataclass
class AppState:
    """Everything the handlers share; filled in by the lifespan and the bootstrap task."""

    settings: Settings
    redis: Redis
    locks: LockService
    started_monotonic: float = field(default_factory=time.monotonic)
    pool: AsyncConnectionPool | None = None
    startup_complete: bool = False
    draining: bool = False
    scheduler: JobScheduler | None = None
    _pool_candidate: AsyncConnectionPool | None = None

    @property
    def db_timeout_s(self) -> float:
        return max(1.0, min(2.0, self.settings.dependency_timeout_s * 2))


def make_redis(settings: Settings, *, retry_dropped: bool = False) -> Redis:
    """A Redis client whose every command fails within the dependency timeout.

    ``retry_dropped`` (the lock service's client) retries once, at once, on a dropped
    connection only: after a Redis restart every pooled connection is dead, and without the
    retry each backend's first command fails ("Connection closed by server"), so every node
    skipped the first tick after the restart (measured). A timeout is never retried. The
    health checks' client does not retry: it reports what one attempt sees (with the retry,
    /health/detailed turned 200 up to 1.6 s after Redis was back instead of 0.8 s).
    """
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.dependency_timeout_s,
        socket_connect_timeout=settings.dependency_timeout_s,
        retry=Retry(NoBackoff(), 1 if retry_dropped else 0,
                    supported_errors=(RedisConnectionError,)),
        max_connections=50,
        client_name=f"lab-{settings.node_id}",
    )


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


# A body refused unread is left in the socket when the server closes, and the kernel answers
# unread bytes with a reset: NGINX, still sending the body or about to read the answer, may meet
# the reset first and answer 502 instead of the 413 (seen once in CI). So a refused body is read
# and dropped, up to a cap above NGINX's own client_max_body_size (1m in the lab's file).
_DRAIN_CAP_BYTES = 2 * 1024 * 1024


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_large = False
    if declared is not None:
        try:
            too_large = int(declared) > limit
        except ValueError:
            raise ClientError(400, "bad Content-Length") from None
        if int(declared) > _DRAIN_CAP_BYTES:
            raise ClientError(413, f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        too_large = too_large or size > limit
        if too_large:
            if size > _DRAIN_CAP_BYTES:
                break
            continue
        chunks.append(chunk)
    if too_large:
        raise ClientError(413, f"body larger than {limit} bytes")
    return b"".join(chunks)


async def _read_json_object(request: Request, limit: int) -> dict[str, Any]:
    return _json_object(await _read_body(request, limit))


def _json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object; anything else is the client's 400."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ClientError(400, "malformed JSON") from None
    if not isinstance(data, dict):
        raise ClientError(400, "expected a JSON object")
    return data


def _state(request: Request) -> AppState:
    return request.app.state.lab


def _pool(state: AppState) -> AsyncConnectionPool:
    if state.pool is None:
        raise DependencyUnavailable("database", "not ready (startup in progress)")
    return state.pool


async def _database(state: AppState, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run ``operation(pool, *args)`` within the request budget; failures become 503."""
    pool = _pool(state)
    try:
        return await db.bounded(operation(pool, *args), state.db_timeout_s)
    except (TimeoutError, PoolTimeout, *db.DatabaseError) as exc:
        raise DependencyUnavailable("database", exc) from exc


def _claims(request: Request) -> security.TokenClaims:
    token = security.bearer_token(request.headers.get("authorization"))
    if token is None:
        raise ClientError(401, "missing bearer token")
    claims = security.verify_token(_state(request).settings.token_secret, token)
    if claims is None:
        raise ClientError(401, "invalid or expired token")
    return claims


# --- health ---------------------------------------------------------------------------

async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "timestamp": time.time()})


async def health_live(request: Request) -> Response:
    state = _state(request)
    return JSONResponse({"status": "alive", "timestamp": time.time(),
                         "uptime_s": round(time.monotonic() - state.started_monotonic, 3)})


async def _check_dependencies(state: AppState) -> tuple[dict[str, str], dict[str, str]]:
    timeout = state.settings.dependency_timeout_s

    async def database() -> None:
        pool = _pool(state)
        await db.ping(pool, timeout)

    async def redis() -> None:
        if not state.settings.health_checks_redis:
            return  # the negative control's blind spot: Redis reported ok, never asked
        async with asyncio.timeout(timeout):
            await state.redis.ping()

    results = await asyncio.gather(database(), redis(), return_exceptions=True)
    checks: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name, result in zip(("database", "redis"), results, strict=True):
        if isinstance(result, BaseException):
            checks[name] = "failed"
            text = str(result) or type(result).__name__
            errors[name] = (text if not isinstance(result, TimeoutError)
                            else f"timeout after {timeout}s")
        else:
            checks[name] = "ok"
    checks["application"] = "ok"
    return checks, errors


async def health_detailed(request: Request) -> Response:
    state = _state(request)
    checks, errors = await _check_dependencies(state)
    body: dict[str, Any] = {"timestamp": time.time(), "checks": checks,
                            "draining": state.draining}
    if errors:
        return JSONResponse({"status": "unhealthy", **body, "errors": errors}, status_code=503)
    return JSONResponse({"status": "healthy", **body})


async def health_ready(request: Request) -> Response:
    state = _state(request)
    if state.settings.readiness_gates:
        if state.draining:
            return JSONResponse({"status": "draining", "timestamp": time.time()}, status_code=503)
        if not state.startup_complete:
            return JSONResponse({"status": "starting", "timestamp": time.time()}, status_code=503)
    elif state.pool is None:
        # The negative control's blind spot: no database to ask yet, so it claims to be ready.
        return JSONResponse({"status": "ready", "timestamp": time.time()})
    checks, errors = await _check_dependencies(state)
    if errors:
        return JSONResponse({"status": "not_ready", "timestamp": time.time(), "checks": checks,
                             "errors": errors}, status_code=503)
    return JSONResponse({"status": "ready", "timestamp": time.time(), "checks": checks})


# --- API --------------------------------------------------------------------------------

async def login(request: Request) -> Response:
    state = _state(request)
    data = await _read_json_object(request, state.settings.max_body_bytes)
    email, password = data.get("email"), data.get("password")
    if not isinstance(email, str) or not isinstance(password, str) or not email or not password:
        raise ClientError(400, "email and password (strings) are required")
    user = await _database(state, db.find_user, email.strip().lower())
    stored = user.password_hash if user else _DUMMY_HASH
    ok = await asyncio.to_thread(security.verify_password, password, stored)
    if user is None or not ok:
        event("auth.login_failed", email=email[:100])
        raise ClientError(401, "invalid credentials")
    token = security.sign_token(state.settings.token_secret, user.id, user.email,
                                ttl_s=state.settings.token_ttl_s)
    return JSONResponse({"token": token, "token_type": "bearer",
                         "expires_in": state.settings.token_ttl_s})


async def conversations(request: Request) -> Response:
    state = _state(request)
    claims = _claims(request)
    rows = await _database(state, db.list_conversations, claims.user_id)
    return JSONResponse({"conversations": rows})


async def post_message(request: Request) -> Response:
    state = _state(request)
    claims = _claims(request)
    data = await _read_json_object(request, state.settings.max_body_bytes)
    conversation_id, body = data.get("conversation_id"), data.get("body")
    if isinstance(conversation_id, bool) or not isinstance(conversation_id, int):
        raise ClientError(400, "conversation_id (integer) is required")
    if not isinstance(body, str) or not body.strip():
        raise ClientError(400, "body (non-empty string) is required")
    message_id = await _database(state, db.insert_message, claims.user_id, conversation_id,
                                 body, state.settings.node_id)
    if message_id is None:
        raise ClientError(404, "no such conversation for this user")
    return JSONResponse({"id": message_id, "conversation_id": conversation_id},
                        status_code=201)


async def sms_webhook(request: Request) -> Response:
    state = _state(request)
    raw = await _read_body(request, state.settings.max_body_bytes)
    if not security.verify_webhook_signature(state.settings.webhook_secret, raw,
                                             request.headers.get("x-signature")):
        event("webhook.bad_signature")
        raise ClientError(401, "bad or missing X-Signature")
    data = _json_object(raw)
    sender, recipient, body = data.get("from"), data.get("to", ""), data.get("body")
    if not isinstance(sender, str) or not isinstance(body, str) or not isinstance(recipient, str):
        raise ClientError(400, "from and body (strings) are required")
    message_id = await _database(state, db.insert_inbound, sender, recipient, body,
                                 state.settings.node_id)
    return JSONResponse({"id": message_id, "status": "accepted"}, status_code=202)


async def admin_locks(request: Request) -> Response:
    state = _state(request)
    token = security.bearer_token(request.headers.get("authorization"))
    if token is None or not security.constant_time_equal(token, state.settings.admin_token):
        raise ClientError(401, "admin token required")
    try:
        async with asyncio.timeout(state.settings.dependency_timeout_s * 2):
            locks = await state.locks.get_active_job_locks()
    except (TimeoutError, RedisError) as exc:
        raise DependencyUnavailable("redis", exc) from exc
    return JSONResponse({"locks": [
        {"job": lock.job, "holder": lock.holder, "fencing_token": lock.fencing_token,
         "ttl_ms": lock.ttl_ms} for lock in locks]})


# --- errors -----------------------------------------------------------------------------

async def _client_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ClientError)
    return _error(exc.status, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, exc.detail or "error", )


async def _unavailable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DependencyUnavailable)
    event("request.dependency_unavailable", path=request.url.path, dependency=exc.dependency,
          reason=str(exc), level=logging.WARNING)
    return _error(503, f"{exc.dependency} unavailable", dependency=exc.dependency,
                  retry_after_s=1)


async def _unexpected(request: Request, exc: Exception) -> Response:
    event("request.failed", path=request.url.path, level=logging.ERROR, reason=repr(exc))
    return _error(500, "internal error")


class BackendIdHeader:
    """Outermost ASGI wrapper: stamps ``X-Backend-Id`` on every response, even a 500."""

    def __init__(self, app: ASGIApp, node_id: str):
        self.app = app
        self.header = (b"x-backend-id", node_id.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, stamped)


def create_app(state: AppState, lifespan: Any = None) -> Starlette:
    """The Starlette app with its routes and error handlers; ``state`` is shared by handlers."""
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/health/live", health_live, methods=["GET"]),
        Route("/health/ready", health_ready, methods=["GET"]),
        Route("/health/detailed", health_detailed, methods=["GET"]),
        Route("/api/auth/login", login, methods=["POST"]),
        Route("/api/conversations", conversations, methods=["GET"]),
        Route("/api/messages", post_message, methods=["POST"]),
        Route("/webhooks/sms", sms_webhook, methods=["POST"]),
        Route("/admin/locks", admin_locks, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ClientError: _client_error,
            HTTPException: _http_error,
            DependencyUnavailable: _unavailable,
            Exception: _unexpected,
        },
    )
    app.state.lab = state
    return app
