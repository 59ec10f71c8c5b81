"""One Commerce Layer access token shared by every worker process, kept in Redis until shortly before it expires.

The token endpoint allows only 30 requests a minute per IP, so processes must not each fetch their own.
"""

from __future__ import annotations

import redis

from service.redis_store import DeleteIfEqual

_PREFIX = "walletsync:cl-token:"


class RedisTokenStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._delete_if_equal = DeleteIfEqual(client)

    def get(self, key: str) -> str | None:
        value = self._redis.get(_PREFIX + key)
        return value.decode() if isinstance(value, bytes) else value

    def put(self, key: str, token: str, ttl_seconds: int) -> None:
        self._redis.set(_PREFIX + key, token, ex=max(ttl_seconds, 1))

    def discard(self, key: str, token: str) -> None:
        # Only if it is the token that just failed: another process may already have put a fresh one there.
        self._delete_if_equal(_PREFIX + key, token)
