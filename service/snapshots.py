"""The newest known event per provider payment method, so that a burst of events collapses into one write.

The web process offers every queued event here; the worker offers its own too (covering replays and a lost
offer). A task applies the newest snapshot rather than its own event, so when twenty updates of one card wait
in the queue the first task to run writes the newest state, and the others find their event already
superseded and finish without calling Commerce Layer. "Newest" is `service.domain.ordering_key`.

Events of a card can also arrive one by one while workers are idle (a burst over a second): then every task
would find its own event the newest and write it. So a card whose newest two events arrived within
`BURST_QUIET_SECONDS` of each other is written only once it has been quiet that long (`quiet_wait`); the first
event of a burst is written at once, the rest collapse into one write of the newest.
"""

from __future__ import annotations

import json

import redis

from service.domain import PaymentMethodEvent
from service.eventlog import event_json
from service.ordering import encode

SNAPSHOT_TTL_SECONDS = 40 * 24 * 3600
BURST_QUIET_SECONDS = 1.0

# Replace the snapshot only with a newer one (keys compare as strings, see service.ordering.encode), and keep
# when the newest and the one before it arrived (Redis's clock, shared by every host). A Lua function, so that
# the webhook's intake script (service.intake) can offer a snapshot in the same round trip as it queues.
OFFER_SNAPSHOT_LUA = """
local function offer_snapshot(key, order, event, ttl)
  local held = redis.call('HMGET', key, 'order', 'offered_at')
  if held[1] and held[1] >= order then return 0 end
  local clock = redis.call('TIME')
  local now = clock[1] .. '.' .. string.format('%06d', clock[2])
  local previous = held[2] or '0'
  redis.call('HSET', key, 'order', order, 'event', event, 'offered_at', now, 'previous_offered_at', previous)
  redis.call('EXPIRE', key, ttl)
  return 1
end
"""
_OFFER = OFFER_SNAPSHOT_LUA + "return offer_snapshot(KEYS[1], ARGV[1], ARGV[2], ARGV[3])\n"


class Settling(Exception):
    """The card's events are still arriving in a burst: write it after `retry_after` seconds (not a failure)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"events still arriving for this card; write in {retry_after:.2f} s")
        self.retry_after = retry_after


def snapshot_key(provider: str, payment_source_token: str) -> str:
    return f"walletsync:snapshot:{provider}:{payment_source_token}"


class Snapshots:
    def __init__(self, client: redis.Redis, *, burst_quiet: float = 0.0) -> None:
        """`burst_quiet`: see `quiet_wait` (0: write at once; the worker uses BURST_QUIET_SECONDS)."""
        self._redis = client
        self._offer = client.register_script(_OFFER)
        self._burst_quiet = burst_quiet

    def offer(self, event: PaymentMethodEvent) -> None:
        """Keep `event` if it is newer than the snapshot held (atomic)."""
        key = snapshot_key(event.provider, event.payment_source_token)
        self._offer(keys=[key], args=[encode(event.order_key), event_json(event), SNAPSHOT_TTL_SECONDS])

    def quiet_wait(self, event: PaymentMethodEvent) -> float:
        """Seconds until `event`'s card has been quiet for `burst_quiet` seconds, when its newest two events
        arrived within `burst_quiet` of each other (a burst); else 0."""
        quiet = self._burst_quiet
        if quiet <= 0:
            return 0.0
        pipe = self._redis.pipeline(transaction=False)
        pipe.hmget(snapshot_key(event.provider, event.payment_source_token), ["offered_at", "previous_offered_at"])
        pipe.time()
        (offered, previous), (seconds, micros) = pipe.execute()
        if offered is None or previous is None:
            return 0.0
        last, before, now = float(offered), float(previous), float(seconds) + float(micros) / 1_000_000
        if last - before >= quiet:
            return 0.0
        return max(last + quiet - now, 0.0)

    def newest(self, event: PaymentMethodEvent) -> PaymentMethodEvent:
        """The newest known event about `event`'s payment method (`event` itself when none is newer)."""
        raw = self._redis.hget(snapshot_key(event.provider, event.payment_source_token), "event")
        if raw is None:
            return event
        snapshot = PaymentMethodEvent.from_message(json.loads(raw))
        return snapshot if snapshot.order_key > event.order_key else event
