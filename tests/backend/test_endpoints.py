"""The backend's HTTP contract, through the lab's NGINX and real dependencies."""

from __future__ import annotations

import json
import time

import psycopg
import pytest
from lab_backend.security import webhook_signature

from .conftest import wait_nginx_healthy, wait_until

pytestmark = pytest.mark.docker

BACKENDS = {"backend-1", "backend-2", "backend-3"}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_health_is_answered_by_every_backend_with_its_id(http):
    """/health answers 200 with a timestamp, and round robin shows several X-Backend-Id."""
    seen = set()
    for _ in range(9):
        response = http.get("/health")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "ok" and isinstance(body["timestamp"], float)
        seen.add(response.headers["x-backend-id"])
    assert seen <= BACKENDS and len(seen) >= 2


def test_detailed_ready_and_live_report_healthy(http):
    """With every dependency up, detailed is healthy, ready is 200 and live gives an uptime."""
    detailed = http.get("/health/detailed")
    assert detailed.status_code == 200, detailed.text
    assert detailed.json()["status"] == "healthy"
    assert detailed.json()["checks"] == {"database": "ok", "redis": "ok", "application": "ok"}
    assert http.get("/health/ready").status_code == 200
    live = http.get("/health/live")
    assert live.status_code == 200 and live.json()["uptime_s"] > 0


def test_login_accepts_seeded_user_and_refuses_wrong_password(http, running_lab):
    """A seeded user logs in with the seed password; a wrong password or user gets 401."""
    good = http.post("/api/auth/login", json={
        "email": "user2@lab.test", "password": running_lab.secrets.seed_password})
    assert good.status_code == 200 and good.json()["token"]
    for email, password in (("user2@lab.test", "wrong"), ("nobody@lab.test", "x")):
        bad = http.post("/api/auth/login", json={"email": email, "password": password})
        assert bad.status_code == 401


def test_conversations_belong_to_the_token_holder(http, user_token, running_lab):
    """/api/conversations lists the seeded conversations of the token's user only."""
    mine = http.get("/api/conversations", headers=_auth(user_token))
    assert mine.status_code == 200
    conversations = mine.json()["conversations"]
    assert len(conversations) >= 3
    other = http.post("/api/auth/login", json={
        "email": "user3@lab.test", "password": running_lab.secrets.seed_password}).json()
    theirs = http.get("/api/conversations", headers=_auth(other["token"])).json()
    assert not {c["id"] for c in conversations} & {c["id"] for c in theirs["conversations"]}


def test_acknowledged_message_is_committed_in_postgres(http, user_token, running_lab):
    """A 201 from POST /api/messages means the row is already in PostgreSQL."""
    conversation = http.get("/api/conversations", headers=_auth(user_token)).json()[
        "conversations"][0]
    body = f"durable {time.time()}"
    response = http.post("/api/messages", headers=_auth(user_token),
                         json={"conversation_id": conversation["id"], "body": body})
    assert response.status_code == 201, response.text
    with psycopg.connect(running_lab.endpoints.postgres_dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT body, node FROM messages WHERE id = %s",
                           (response.json()["id"],)).fetchone()
    assert row is not None and row[0] == body and row[1] == response.headers["x-backend-id"]


def test_message_to_someone_elses_conversation_is_404(http, user_token, running_lab):
    """Posting into another user's conversation is refused with 404, nothing stored."""
    other = http.post("/api/auth/login", json={
        "email": "user3@lab.test", "password": running_lab.secrets.seed_password}).json()
    theirs = http.get("/api/conversations", headers=_auth(other["token"])).json()
    response = http.post("/api/messages", headers=_auth(user_token), json={
        "conversation_id": theirs["conversations"][0]["id"], "body": "intrusion"})
    assert response.status_code == 404


@pytest.mark.parametrize(("method", "path", "kwargs", "status"), [
    ("POST", "/api/auth/login", {"content": b"{not json"}, 400),
    ("POST", "/api/auth/login", {"json": {"email": 5}}, 400),
    ("GET", "/api/conversations", {}, 401),
    ("GET", "/api/conversations", {"headers": {"Authorization": "Bearer forged.sig"}}, 401),
    ("POST", "/api/messages", {"json": {"conversation_id": 1, "body": "x"}}, 401),
    ("POST", "/api/auth/login", {"content": b"x" * (64 * 1024 + 10)}, 413),
    ("GET", "/no/such/route", {}, 404),
    ("GET", "/admin/locks", {}, 401),
])
def test_client_mistakes_get_4xx_never_500(http, method, path, kwargs, status):
    """Malformed JSON, bad tokens, oversized bodies and unknown routes get the right 4xx."""
    response = http.request(method, path, **kwargs)
    assert response.status_code == status, response.text


def test_malformed_message_json_with_valid_token_is_400(http, user_token):
    """A valid token does not turn a malformed body or wrong types into a 500."""
    for content in (b"{", b"[1]", json.dumps({"conversation_id": "x", "body": "y"}).encode()):
        response = http.post("/api/messages", content=content,
                             headers={**_auth(user_token), "Content-Type": "application/json"})
        assert response.status_code == 400, response.text


def test_sms_webhook_checks_the_signature_and_stores_the_message(http, running_lab):
    """A correctly signed webhook is stored (202); a wrong or missing signature gets 401."""
    body = json.dumps({"from": "+15550001", "to": "+15550002",
                       "body": f"inbound {time.time()}"}).encode()
    good = http.post("/webhooks/sms", content=body, headers={
        "X-Signature": webhook_signature(running_lab.secrets.webhook_secret, body)})
    assert good.status_code in (200, 202), good.text
    assert http.post("/webhooks/sms", content=body,
                     headers={"X-Signature": "sha256=" + "0" * 64}).status_code == 401
    assert http.post("/webhooks/sms", content=body).status_code == 401
    with psycopg.connect(running_lab.endpoints.postgres_dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT sender FROM inbound_messages WHERE id = %s",
                           (good.json()["id"],)).fetchone()
    assert row == ("+15550001",)


def test_admin_locks_show_the_job_locks_while_jobs_run(http, running_lab):
    """/admin/locks with the admin token lists a job lock with holder, token and TTL."""
    headers = _auth(running_lab.secrets.admin_token)
    interval = running_lab.config.backend.job_interval_s

    def a_lock():
        response = http.get("/admin/locks", headers=headers)
        assert response.status_code == 200, response.text
        return response.json()["locks"]

    locks = wait_until(a_lock, timeout_s=4 * interval, interval_s=0.05)
    assert locks, "no job lock seen during four job intervals"
    lock = locks[0]
    assert lock["job"] in {"recurring-messages", "phone-linking-recovery"}
    assert lock["holder"] in BACKENDS
    assert isinstance(lock["fencing_token"], int) and lock["ttl_ms"] > 0


def test_database_outage_gives_fast_503_and_not_ready(http, running_lab):
    """With PgBouncer stopped, a DB endpoint answers 503 within ~2 s and readiness is 503."""
    try:
        running_lab.stop("pgbouncer")
        started = time.monotonic()
        # One POST: NGINX does not retry it, so the answer is the backend's own.
        response = http.post("/api/auth/login", json={
            "email": "user1@lab.test", "password": running_lab.secrets.seed_password})
        elapsed = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert elapsed < 3.0
        code, output = running_lab.exec("backend-1", ["lab-probe", "/health/ready"])
        assert code == 1 and "503" in output
        code, output = running_lab.exec("backend-1", ["lab-probe", "/health/live"])
        assert code == 0
    finally:
        running_lab.start("pgbouncer")
    assert wait_until(
        lambda: running_lab.exec("backend-1", ["lab-probe", "/health/ready"])[0] == 0, 20, 0.5)
    wait_nginx_healthy(http)
