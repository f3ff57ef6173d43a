"""The backend's pure helpers and its dependency-free answers, without Docker."""

from __future__ import annotations

import time

import httpx
import pytest
from lab_backend import security
from lab_backend.app import AppState, BackendIdHeader, create_app
from lab_backend.config import ConfigurationError, Settings
from lab_backend.locks import LockService, _parse_value
from redis.asyncio import Redis

from .conftest import run

SECRETS = {"LAB_TOKEN_SECRET": "t", "LAB_ADMIN_TOKEN": "a", "LAB_WEBHOOK_SECRET": "w",
           "LAB_SEED_PASSWORD": "p"}


def test_password_hash_verifies_only_the_right_password():
    """A scrypt hash accepts its password and rejects any other."""
    stored = security.hash_password("correct horse")
    assert stored.startswith("scrypt$")
    assert security.verify_password("correct horse", stored)
    assert not security.verify_password("correct hors", stored)


def test_password_hashes_are_salted():
    """Hashing the same password twice gives different strings."""
    assert security.hash_password("x") != security.hash_password("x")


def test_the_unknown_user_hash_is_a_real_scrypt_hash():
    """The hash an unknown e-mail is checked against is what hash_password computes (one KDF)."""
    from lab_backend import app

    assert app._DUMMY_HASH == security.hash_password("not-a-real-password", salt=b"\0" * 16)
    assert security.verify_password("not-a-real-password", app._DUMMY_HASH)


@pytest.mark.parametrize("stored", ["", "plain", "scrypt$1$2$3$zz$00", "md5$a$b$c$d$e"])
def test_malformed_password_hash_is_rejected_not_raised(stored):
    """A malformed stored hash verifies as False instead of raising."""
    assert security.verify_password("x", stored) is False


def test_token_round_trip_carries_the_claims():
    """A signed token verifies with the same secret and returns its user."""
    token = security.sign_token("secret", 7, "user7@lab.test", ttl_s=60)
    claims = security.verify_token("secret", token)
    assert claims is not None and claims.user_id == 7 and claims.email == "user7@lab.test"


def test_token_with_wrong_secret_or_tampering_is_rejected():
    """A token fails verification with another secret or with a modified payload."""
    token = security.sign_token("secret", 7, "u@lab.test")
    payload, mac = token.split(".")
    assert security.verify_token("other", token) is None
    assert security.verify_token("secret", payload[:-2] + "xx." + mac) is None
    assert security.verify_token("secret", "garbage") is None
    assert security.verify_token("secret", "") is None


def test_expired_token_is_rejected():
    """A token is invalid once its expiry has passed."""
    token = security.sign_token("secret", 1, "u@lab.test", ttl_s=10, now=time.time() - 20)
    assert security.verify_token("secret", token) is None


def test_webhook_signature_matches_hmac_of_raw_body():
    """The expected X-Signature verifies; a changed body, secret or header does not."""
    body = b'{"from":"+1","body":"hi"}'
    header = security.webhook_signature("hook", body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert security.verify_webhook_signature("hook", body, header)
    assert not security.verify_webhook_signature("hook", body + b" ", header)
    assert not security.verify_webhook_signature("other", body, header)
    assert not security.verify_webhook_signature("hook", body, None)
    assert not security.verify_webhook_signature("hook", body, header.replace("sha256=", ""))


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None),
    (None, None), ("", None),
])
def test_bearer_token_parsing(header, token):
    """Only an ``Authorization: Bearer <token>`` header yields a token."""
    assert security.bearer_token(header) == token


def test_settings_refuse_missing_secrets_naming_them():
    """Missing secrets stop the configuration with every missing name in the message."""
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"LAB_TOKEN_SECRET": "t"})
    for name in ("LAB_ADMIN_TOKEN", "LAB_WEBHOOK_SECRET", "LAB_SEED_PASSWORD"):
        assert name in str(caught.value)


def test_settings_defaults_and_switches():
    """Defaults match the contract and LAB_LOCKING / LAB_FENCING accept 0."""
    settings = Settings.from_env(SECRETS)
    assert (settings.node_id, settings.port, settings.job_interval_s) == ("backend-1", 8000, 2.0)
    assert settings.locking and settings.fencing and settings.stop_timeout_s == 10
    off = Settings.from_env({**SECRETS, "LAB_LOCKING": "0", "LAB_FENCING": "0"})
    assert not off.locking and not off.fencing
    assert settings.readiness_gates and settings.drain_s == 1.0
    assert not Settings.from_env({**SECRETS, "LAB_READINESS_GATES": "0"}).readiness_gates
    assert "t" not in repr(settings).replace("Settings", "").replace("port", "")


def test_settings_reject_bad_numbers():
    """A non-numeric or out-of-range value is a configuration error."""
    with pytest.raises(ConfigurationError, match="LAB_JOB_INTERVAL_S"):
        Settings.from_env({**SECRETS, "LAB_JOB_INTERVAL_S": "soon"})
    with pytest.raises(ConfigurationError, match="LAB_PORT"):
        Settings.from_env({**SECRETS, "LAB_PORT": "70000"})


def test_lock_value_parsing():
    """A lock value ``node|nonce|token`` yields holder and fencing token."""
    assert _parse_value("backend-2|abcd|42") == ("backend-2", 42)
    assert _parse_value("weird") == ("weird", None)


class OfflineClient:
    """Calls the ASGI app in-process (httpx's ASGI transport); no server, no lifespan."""

    def __init__(self, app):
        self.app = app

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://backend") as c:
                return await c.request(method, path, **kwargs)

        return run(call(), timeout_s=10)

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return self.request("POST", path, **kwargs)


def _offline(**env: str) -> OfflineClient:
    settings = Settings.from_env({**SECRETS, "LAB_NODE_ID": "backend-9",
                                  "LAB_REDIS_URL": "redis://127.0.0.1:1/0", **env})
    redis = Redis.from_url(settings.redis_url)
    state = AppState(settings=settings, redis=redis, locks=LockService(redis, settings.node_id))
    return OfflineClient(BackendIdHeader(create_app(state), settings.node_id))


@pytest.fixture
def offline_client():
    """The app with no database and an unreachable Redis, lifespan not started."""
    return _offline()


def test_health_needs_no_dependency_and_names_the_node(offline_client):
    """/health and /health/live answer 200 with X-Backend-Id while nothing else is up."""
    for path in ("/health", "/health/live"):
        response = offline_client.get(path)
        assert response.status_code == 200
        assert response.headers["x-backend-id"] == "backend-9"
    assert "uptime_s" in offline_client.get("/health/live").json()


def test_ready_is_503_until_startup_completes(offline_client):
    """/health/ready says "starting" with 503 before the schema and pools are ready."""
    response = offline_client.get("/health/ready")
    assert response.status_code == 503 and response.json()["status"] == "starting"


def test_ready_without_gates_claims_ready_while_starting():
    """LAB_READINESS_GATES=0 (a negative control) answers ready 200 before startup completes."""
    response = _offline(LAB_READINESS_GATES="0").get("/health/ready")
    assert response.status_code == 200 and response.json()["status"] == "ready"


def test_client_mistakes_get_4xx_with_backend_id(offline_client):
    """Bad JSON, missing token, oversized body and unknown route get 400/401/413/404."""
    cases = [
        offline_client.post("/api/auth/login", content=b"{not json"),
        offline_client.post("/api/auth/login", json=["a"]),
        offline_client.get("/api/conversations"),
        offline_client.post("/api/messages", json={"conversation_id": 1, "body": "x"},
                            headers={"Authorization": "Bearer forged.token"}),
        offline_client.post("/api/auth/login", content=b"x" * (64 * 1024 + 1)),
        offline_client.post("/webhooks/sms", content=b"{}", headers={"X-Signature": "sha256=0"}),
        offline_client.get("/admin/locks", headers={"Authorization": "Bearer wrong"}),
        offline_client.get("/no/such/route"),
    ]
    assert [r.status_code for r in cases] == [400, 400, 401, 401, 413, 401, 401, 404]
    assert all(r.headers["x-backend-id"] == "backend-9" for r in cases)
    assert all("error" in r.json() for r in cases)


def test_database_endpoint_without_database_is_503(offline_client):
    """A valid login request while the database is not ready answers 503, not 500."""
    response = offline_client.post("/api/auth/login", json={"email": "a@b", "password": "x"})
    assert response.status_code == 503
