"""Password hashing, bearer tokens and webhook signatures: pure functions over the stdlib.

Tokens are ``<base64url(payload json)>.<hex hmac-sha256(payload)>``: the payload carries the
user id, e-mail and expiry, so verifying a token needs no database round trip.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass

# scrypt parameters: n=2**14, r=8, p=1 (~16 MiB, a few ms) — cheap enough for a login storm
# in a lab, still a real memory-hard KDF.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """Hash a password with scrypt; the result carries its parameters and salt."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P,
        maxmem=_SCRYPT_MAXMEM, dklen=32,
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches a ``hash_password`` result; False for any malformed hash."""
    try:
        scheme, n, r, p, salt_hex, digest_hex = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt_hex), n=int(n), r=int(r), p=int(p),
            maxmem=_SCRYPT_MAXMEM, dklen=len(digest_hex) // 2,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest.hex(), digest_hex)


@dataclass(frozen=True)
class TokenClaims:
    """What a valid bearer token says about its holder."""

    user_id: int
    email: str
    expires_at: int


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign_token(secret: str, user_id: int, email: str, *, ttl_s: int = 3600,
               now: float | None = None) -> str:
    """A bearer token for ``user_id``, valid ``ttl_s`` seconds, signed with HMAC-SHA256."""
    now = time.time() if now is None else now
    payload = json.dumps(
        {"uid": user_id, "email": email, "exp": int(now) + ttl_s}, separators=(",", ":"),
        sort_keys=True,
    ).encode()
    encoded = _b64encode(payload)
    return f"{encoded}.{_mac(secret, encoded.encode())}"


def verify_token(secret: str, token: str, *, now: float | None = None) -> TokenClaims | None:
    """The claims of a correctly signed, unexpired token; None for anything else."""
    now = time.time() if now is None else now
    encoded, sep, mac = token.partition(".")
    if not sep or not encoded or not hmac.compare_digest(_mac(secret, encoded.encode()), mac):
        return None
    try:
        data = json.loads(_b64decode(encoded))
        claims = TokenClaims(user_id=int(data["uid"]), email=str(data["email"]),
                             expires_at=int(data["exp"]))
    except (ValueError, KeyError, TypeError):
        return None
    return claims if claims.expires_at > now else None


def webhook_signature(secret: str, body: bytes) -> str:
    """The ``X-Signature`` header value a sender computes: ``sha256=<hex hmac of body>``."""
    return "sha256=" + _mac(secret, body)


def verify_webhook_signature(secret: str, body: bytes, header: str | None) -> bool:
    """True when ``header`` is the HMAC-SHA256 of the raw ``body``; constant-time compare."""
    if not header:
        return False
    return hmac.compare_digest(webhook_signature(secret, body).encode(), header.strip().encode())


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def constant_time_equal(given: str, expected: str) -> bool:
    """Compare two secrets without leaking where they differ."""
    return hmac.compare_digest(given.encode(), expected.encode())
