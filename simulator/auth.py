"""OAuth2 client_credentials tokens: issuing JWT-shaped access tokens and checking bearer tokens.

Tokens look like Commerce Layer's (`header.payload.signature`, base64url, with the real payload's fields) but
the signature is random bytes: clients must treat tokens as opaque, and only this simulator can tell whether a
token is one it issued and whether it has expired.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

ORGANIZATION = {"id": "simorg", "slug": "simulator", "enterprise": False, "region": "eu-west-1"}
APPLICATION_ID = "simapp"
DEFAULT_SCOPE = "market:all"
# The simulator's well-known default credentials (not secrets: anyone may use them against a simulator).
DEFAULT_CLIENT_ID = "sim-client-id"
DEFAULT_CLIENT_SECRET = "sim-client-secret"
# Expired tokens are forgotten once this many are held, so a long benchmark cannot grow memory without bound.
PRUNE_THRESHOLD = 10_000


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_json(value: Any) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def decode_payload(token: str) -> dict[str, Any]:
    """The JSON payload of a JWT-shaped token (no signature check); raises ValueError when malformed."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT")
    padded = parts[1] + "=" * (-len(parts[1]) % 4)
    payload = json.loads(base64.urlsafe_b64decode(padded))
    if not isinstance(payload, dict):
        raise ValueError("JWT payload is not an object")
    return payload


class TokenIssuer:
    """Checks client credentials, issues tokens, and validates the bearer tokens presented to `/api`."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        ttl: int,
        test_mode: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self.ttl = ttl
        self.test_mode = test_mode
        self._clock = clock
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}  # token -> unix time after which it is refused
        self._issued = 0

    def client_ok(self, client_id: Any, client_secret: Any) -> bool:
        """Constant-time comparison of the presented credentials with the configured ones."""
        if not isinstance(client_id, str) or not isinstance(client_secret, str):
            return False
        id_ok = hmac.compare_digest(client_id.encode(), self._client_id.encode())
        secret_ok = hmac.compare_digest(client_secret.encode(), self._client_secret.encode())
        return id_ok and secret_ok

    def issue(self, scope: str | None = None) -> dict[str, Any]:
        """A token response body as Commerce Layer's `/oauth/token` returns it; every token is unique."""
        now = self._clock()
        created_at = int(now)
        expires_at = created_at + self.ttl
        granted_scope = scope or DEFAULT_SCOPE
        header = {"alg": "HS512", "typ": "JWT"}
        payload = {
            "organization": dict(ORGANIZATION),
            "application": {
                "id": APPLICATION_ID,
                "client_id": self._client_id,
                "kind": "integration",
                "public": False,
            },
            "scope": granted_scope,
            "exp": expires_at,
            "test": self.test_mode,
            "rand": secrets.randbelow(10**9) / 10**9,
            "iat": created_at,
        }
        token = ".".join((_b64url_json(header), _b64url_json(payload), _b64url(secrets.token_bytes(48))))
        with self._lock:
            if len(self._expiry) >= PRUNE_THRESHOLD:
                self._expiry = {t: e for t, e in self._expiry.items() if e > now}
            self._expiry[token] = now + self.ttl
            self._issued += 1
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self.ttl,
            "scope": granted_scope,
            "created_at": created_at,
        }

    def valid(self, token: str | None) -> bool:
        """True for a token this simulator issued that has not expired (nor been expired by an admin)."""
        if not token:
            return False
        with self._lock:
            expires_at = self._expiry.get(token)
        return expires_at is not None and self._clock() < expires_at

    def expire_all(self) -> int:
        """Make every issued token invalid from now on; returns how many were still valid."""
        now = self._clock()
        with self._lock:
            alive = sum(1 for expires_at in self._expiry.values() if expires_at > now)
            self._expiry = dict.fromkeys(self._expiry, 0.0)
        return alive

    def reset(self) -> None:
        """Forget every issued token and the issue count."""
        with self._lock:
            self._expiry.clear()
            self._issued = 0

    @property
    def issued(self) -> int:
        with self._lock:
            return self._issued


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
