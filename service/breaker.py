"""A circuit breaker around Commerce Layer, shared by every worker process through Redis.

Each call's result (hard failure = 5xx, timeout or connection error; anything else = success) goes into a short
list of the last N results. When most of them failed, the breaker opens for a while: calls are refused at once
with `BreakerOpen`, and the task waits (without spending its retry budget) instead of hammering Commerce Layer.
When the open period ends, one probe at a time is let through; its success closes the breaker, its failure opens
it again. Events are delayed, never dropped.
"""

from __future__ import annotations

import logging

import redis

from service.config import BreakerPolicy

log = logging.getLogger(__name__)

_RESULTS = "walletsync:breaker:results"
_OPEN = "walletsync:breaker:open"  # exists while open; expires at the end of the open period
_HALF_OPEN = "walletsync:breaker:half_open"  # exists from opening until a probe succeeds
_PROBE = "walletsync:breaker:probe"  # the one probe in flight while half-open
PROBE_LEASE_SECONDS = 30

# Record one result of a closed breaker; open it when the window holds enough hard failures. One script, so
# that every worker sees the same decision. Returns 1 when this call opened it.
_RECORD = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
if ARGV[1] == '1' then return 0 end
local results = redis.call('LRANGE', KEYS[1], 0, -1)
local failures = 0
for _, r in ipairs(results) do if r == '0' then failures = failures + 1 end end
if #results >= tonumber(ARGV[3]) and failures >= tonumber(ARGV[4]) * #results then
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[5])
  redis.call('SET', KEYS[3], '1', 'EX', 86400)
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class BreakerOpen(Exception):
    """Commerce Layer is failing hard; try again after `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"circuit breaker open for {retry_after:.0f} s")
        self.retry_after = retry_after


class CircuitBreaker:
    def __init__(self, client: redis.Redis, policy: BreakerPolicy) -> None:
        self._redis = client
        self._policy = policy
        self._record = client.register_script(_RECORD)
        self._probing = False

    def before_call(self) -> None:
        """Raise `BreakerOpen` unless a call may go out now."""
        remaining = self._redis.pttl(_OPEN)
        if remaining > 0:
            raise BreakerOpen(remaining / 1000)
        if self._probing or not self._redis.exists(_HALF_OPEN):
            return
        # Half-open: one probe at a time, for all workers together.
        if self._redis.set(_PROBE, "1", nx=True, ex=PROBE_LEASE_SECONDS):
            self._probing = True
            return
        raise BreakerOpen(2.0)

    def record(self, *, ok: bool) -> None:
        if self._probing:
            self._probing = False
            if ok:
                self._redis.delete(_HALF_OPEN, _PROBE, _RESULTS)
                log.info("circuit breaker closed: Commerce Layer answers again")
            else:
                self._open()
            return
        opened = self._record(
            keys=[_RESULTS, _OPEN, _HALF_OPEN],
            args=["1" if ok else "0", self._policy.window, self._policy.min_calls, self._policy.failure_ratio,
                  self._policy.open_seconds],
        )  # fmt: skip
        if opened:
            log.warning(
                "circuit breaker opened: Commerce Layer is failing", extra={"seconds": self._policy.open_seconds}
            )

    def _open(self) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(_OPEN, "1", ex=self._policy.open_seconds)
        pipe.set(_HALF_OPEN, "1", ex=86400)
        pipe.delete(_PROBE)
        pipe.execute()
        log.warning("circuit breaker probe failed: open again", extra={"seconds": self._policy.open_seconds})

    def state(self) -> str:
        if self._redis.pttl(_OPEN) > 0:
            return "open"
        return "half_open" if self._redis.exists(_HALF_OPEN) else "closed"
