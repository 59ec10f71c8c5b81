"""Commerce Layer's rate limits, enforced on our side and shared by every worker process on every host.

The budget is counted in Redis with sliding windows, like Commerce Layer's own: one sorted set of calls per
window, scored by Redis's clock. A call is counted from when its budget is taken and, once its answer has come
back, from the time of that answer (`settle`): Commerce Layer counted it at some moment in between, so our window
always ends after Commerce Layer's and a reservation taken ahead of time (the lookup and the writes of a sync) or
a slow request can never make us send a call that Commerce Layer's window still refuses.
A call that finds no budget raises `RateLimited` with the time until its turn (refused callers get consecutive
turns from when budget frees, see `_ACQUIRE`); the task is rescheduled for then (a Celery countdown), never
sleeping in a worker slot. Every window applies to every call (a conservative reading of "per endpoint" and
"per class" limits: it can only err on the side of fewer calls).

When Commerce Layer answers 429 anyway, its headers are authoritative: every process pauses for the announced
interval, and a stricter `X-Ratelimit-Limit` than ours replaces our window of that length for an hour.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import redis

log = logging.getLogger(__name__)

# Published limits for the uncacheable class (customer payment sources): per 10 s per endpoint, per minute overall.
LIVE_WINDOWS = "50/10s,200/60s"
TEST_WINDOWS = "25/10s,100/60s"
_WINDOW_KEY = "walletsync:ratelimit:window:"  # + seconds: a sorted set of calls, scored by time
_PAUSE_KEY = "walletsync:ratelimit:pause"
_OVERRIDE_KEY = "walletsync:ratelimit:override:"
_TURNS_KEY = "walletsync:ratelimit:next_turn"  # when the next refused caller is told to come back
_WINDOW = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*s\s*$")


# KEYS: one sorted set per window, then the deferral schedule. ARGV: calls, id prefix, then limit and seconds of
# each window. Takes `calls` entries in every window, or none and answers the seconds until the caller's turn.
#
# Turns: when budget runs out with a backlog waiting, every refused caller would be told the same moment (when the
# oldest call leaves the window) and they would all come back together, one in many to find budget and the rest
# to be refused again, cycling through the queue. Instead refused callers get consecutive turns from that moment
# on, spaced at a quarter of the strictest window's steady pace per call (so that budget left unused by a caller
# that no longer needs it, its event settled meanwhile, is taken by the next): each comes back about when budget
# is there for it.
_ACQUIRE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local calls = tonumber(ARGV[1])
local windows = #KEYS - 1
local wait, pace = 0, 0
for i = 1, windows do
  local key, limit, seconds = KEYS[i], tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  pace = math.max(pace, seconds / limit)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - seconds)
  local used = redis.call('ZCARD', key)
  if used + calls > limit then
    local freeing = math.min(used + calls - limit, used) - 1
    local entry = redis.call('ZRANGE', key, freeing, freeing, 'WITHSCORES')
    wait = math.max(wait, (entry[2] and tonumber(entry[2]) or now) + seconds - now)
  end
end
if wait > 0 then
  local turn = math.max(now + wait, tonumber(redis.call('GET', KEYS[#KEYS]) or '0'))
  local next_turn = turn + pace * calls / 4
  redis.call('SET', KEYS[#KEYS], tostring(next_turn), 'PX', math.ceil((next_turn - now) * 1000) + 1000)
  return tostring(math.max(turn - now, 0.01))
end
for i = 1, windows do
  for n = 1, calls do redis.call('ZADD', KEYS[i], now, ARGV[2] .. ':' .. n) end
  redis.call('PEXPIRE', KEYS[i], math.ceil(tonumber(ARGV[2 + 2 * i]) * 1000) + 60000)
end
return '0'
"""

# KEYS: the windows' sorted sets. ARGV: the call's id. The call is counted from now (its answer) on.
_SETTLE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
for _, key in ipairs(KEYS) do
  if redis.call('ZSCORE', key, ARGV[1]) then redis.call('ZADD', key, now, ARGV[1]) end
end
return 0
"""


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
    def __init__(self, client: redis.Redis, *, windows: tuple[Window, ...] | None) -> None:
        """`windows` None: pick the live or test defaults from each call's access token."""
        self._redis = client
        self._windows = windows
        self._acquire = client.register_script(_ACQUIRE)
        self._settle = client.register_script(_SETTLE)

    def acquire(self, *, access_token: str, calls: int = 1) -> list[str]:
        """Take budget for `calls` calls, or raise `RateLimited`. Returns one id per call, for `settle`."""
        paused = self._redis.pttl(_PAUSE_KEY)
        if paused > 0:
            raise RateLimited(paused / 1000)
        windows = self._effective_windows(access_token)
        prefix = uuid.uuid4().hex
        args: list[str | int] = [calls, prefix]
        for window in windows:
            args += [window.limit, window.seconds]
        keys = [f"{_WINDOW_KEY}{w.seconds}" for w in windows] + [_TURNS_KEY]
        wait = float(self._acquire(keys=keys, args=args))
        if wait > 0:
            raise RateLimited(wait)
        return [f"{prefix}:{n}" for n in range(1, calls + 1)]

    def settle(self, call_id: str, *, access_token: str) -> None:
        """The call's answer has come: count it from now on (Commerce Layer counted it before now)."""
        self._settle(keys=[f"{_WINDOW_KEY}{w.seconds}" for w in self._base_windows(access_token)], args=[call_id])

    def observe_429(self, headers: Mapping[str, str]) -> None:
        """Commerce Layer refused a call: pause everyone for its interval and adopt a stricter limit."""
        interval = _number(headers.get("X-Ratelimit-Interval")) or _number(headers.get("Retry-After")) or 1.0
        # Retry-After, when given, says when calls may resume; the interval only says how long the window is.
        pause = _number(headers.get("Retry-After")) or interval
        self._redis.set(_PAUSE_KEY, "1", px=max(int(pause * 1000), 100))
        limit = _number(headers.get("X-Ratelimit-Limit"))
        if limit and interval >= 1:
            self._redis.set(f"{_OVERRIDE_KEY}{int(interval)}", int(limit), ex=3600)
        log.warning("commerce layer answered 429; pausing", extra={"interval": interval, "limit": limit})

    def _base_windows(self, access_token: str) -> tuple[Window, ...]:
        if self._windows is not None:
            return self._windows
        return parse_windows(TEST_WINDOWS if token_is_test(access_token) is not False else LIVE_WINDOWS)

    def _effective_windows(self, access_token: str) -> list[Window]:
        windows = self._base_windows(access_token)
        overrides = self._redis.mget([f"{_OVERRIDE_KEY}{w.seconds}" for w in windows])
        return [
            Window(min(window.limit, int(override)) if override else window.limit, window.seconds)
            for window, override in zip(windows, overrides, strict=True)
        ]


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number > 0 else None
