"""How this service connects to Redis, and the one small script several stores share.

Every client has explicit socket timeouts: a black-holed Redis must turn into a quick error (a 503 for the
webhook, a retry for the worker), never into a hung request.
"""

from __future__ import annotations

import redis

SOCKET_TIMEOUT_SECONDS = 2.0

# Delete the key only if it still holds the value we put there (so nobody removes someone else's state).
_DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def connect(url: str, *, socket_timeout: float = SOCKET_TIMEOUT_SECONDS) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        health_check_interval=15,
        retry_on_timeout=False,
    )


class DeleteIfEqual:
    def __init__(self, client: redis.Redis) -> None:
        self._script = client.register_script(_DELETE_IF_EQUAL)

    def __call__(self, key: str, value: str) -> bool:
        return bool(self._script(keys=[key], args=[value]))
