"""Commerce Layer's rate limits, enforced on our side and shared by every worker process on every host.

The budget is counted in Redis by the `limits` library with moving (sliding) windows, like Commerce Layer's own.
A call that finds no budget raises `RateLimited` with the time until budget frees; the task is rescheduled for
then (a Celery countdown), never sleeping in a worker slot. Every window applies to every call (a conservative
reading of "per endpoint" and "per class" limits: it can only err on the side of fewer calls).

When Commerce Layer answers 429 anyway, its headers are authoritative: every process pauses for the announced
interval, and a stricter `X-Ratelimit-Limit` than ours replaces our window of that length for an hour.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

import redis
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)

# Published limits for the uncacheable class (customer payment sources): per 10 s per endpoint, per minute overall.
LIVE_WINDOWS = "50/10s,200/60s"
TEST_WINDOWS = "25/10s,100/60s"
_NAMESPACE = "walletsync-commercelayer"
_PAUSE_KEY = "walletsync:ratelimit:pause"
_OVERRIDE_KEY = "walletsync:ratelimit:override:"
_WINDOW = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*s\s*$")


class RateLimited(Exception):
    """No budget for a Commerce Layer call now; try again after `retry_after` seconds (not a failure)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limit budget exhausted for {retry_after:.2f} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Window:
    limit: int
    seconds: int

    def __str__(self) -> str:
        return f"{self.limit}/{self.seconds}s"


def parse_windows(text: str) -> tuple[Window, ...]:
    """`"50/10s,200/60s"` → windows; raises ValueError with the offending part."""
    windows = []
    for part in text.split(","):
        match = _WINDOW.match(part)
        if not match or int(match[1]) < 1 or int(match[2]) < 1:
            raise ValueError(f"{part.strip()!r} is not LIMIT/SECONDSs (e.g. 50/10s)")
        windows.append(Window(int(match[1]), int(match[2])))
    return tuple(windows)


def token_is_test(access_token: str) -> bool | None:
    """The `test` claim of a Commerce Layer access token (a JWT), or None when it cannot be read."""
    try:
        payload = access_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    test = claims.get("test") if isinstance(claims, dict) else None
    return test if isinstance(test, bool) else None


class RateLimiter:
    def __init__(self, client: redis.Redis, storage_url: str, *, windows: tuple[Window, ...] | None) -> None:
        """`windows` None: pick the live or test defaults from each call's access token."""
        self._redis = client
        self._limiter = MovingWindowRateLimiter(RedisStorage(storage_url))
        self._windows = windows

    def acquire(self, *, access_token: str, calls: int = 1) -> None:
        """Take budget for `calls` calls, or raise `RateLimited`."""
        paused = self._redis.pttl(_PAUSE_KEY)
        if paused > 0:
            raise RateLimited(paused / 1000)
        for item in self._items(access_token):
            if not self._limiter.hit(item, _NAMESPACE, cost=calls):
                reset_at, _ = self._limiter.get_window_stats(item, _NAMESPACE)
                raise RateLimited(max(reset_at - time.time(), 0.05))

    def observe_429(self, headers: Mapping[str, str]) -> None:
        """Commerce Layer refused a call: pause everyone for its interval and adopt a stricter limit."""
        interval = _number(headers.get("X-Ratelimit-Interval")) or _number(headers.get("Retry-After")) or 1.0
        self._redis.set(_PAUSE_KEY, "1", px=max(int(interval * 1000), 100))
        limit = _number(headers.get("X-Ratelimit-Limit"))
        if limit and interval >= 1:
            self._redis.set(f"{_OVERRIDE_KEY}{int(interval)}", int(limit), ex=3600)
        log.warning("commerce layer answered 429; pausing", extra={"interval": interval, "limit": limit})

    def _items(self, access_token: str) -> list[RateLimitItem]:
        windows = self._windows
        if windows is None:
            windows = parse_windows(TEST_WINDOWS if token_is_test(access_token) is not False else LIVE_WINDOWS)
        overrides = self._redis.mget([f"{_OVERRIDE_KEY}{w.seconds}" for w in windows])
        items: list[RateLimitItem] = []
        for window, override in zip(windows, overrides, strict=True):
            limit = min(window.limit, int(override)) if override else window.limit
            items.append(RateLimitItemPerSecond(limit, window.seconds))
        return items


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number > 0 else None
