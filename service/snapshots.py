"""The newest known event per provider payment method, so that a burst of events collapses into one write.

The web process offers every queued event here; the worker offers its own too (covering replays and a lost
offer). A task applies the newest snapshot rather than its own event, so when twenty updates of one card wait
in the queue the first task to run writes the newest state, and the others find their event already
superseded and finish without calling Commerce Layer. "Newest" is `service.domain.ordering_key`.
"""

from __future__ import annotations

import json

import redis

from service.domain import PaymentMethodEvent
from service.ordering import encode

SNAPSHOT_TTL_SECONDS = 40 * 24 * 3600

# Replace the snapshot only with a newer one (keys compare as strings, see service.ordering.encode).
_OFFER = """
local current = redis.call('HGET', KEYS[1], 'order')
if current and current >= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'order', ARGV[1], 'event', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


def snapshot_key(provider: str, payment_source_token: str) -> str:
    return f"walletsync:snapshot:{provider}:{payment_source_token}"


class Snapshots:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._offer = client.register_script(_OFFER)

    def offer(self, event: PaymentMethodEvent, *, pipeline: redis.client.Pipeline | None = None) -> None:
        """Keep `event` if it is newer than the snapshot held (atomic)."""
        args: list[str | int] = [
            encode(event.order_key),
            json.dumps(event.to_message(), sort_keys=True),
            SNAPSHOT_TTL_SECONDS,
        ]
        key = snapshot_key(event.provider, event.payment_source_token)
        if pipeline is not None:
            # EVAL, not the registered script: in a pipeline redis-py first checks that a script exists, which
            # would cost the webhook one more round trip.
            pipeline.eval(_OFFER, 1, key, *args)
        else:
            self._offer(keys=[key], args=args)

    def newest(self, event: PaymentMethodEvent) -> PaymentMethodEvent:
        """The newest known event about `event`'s payment method (`event` itself when none is newer)."""
        raw = self._redis.hget(snapshot_key(event.provider, event.payment_source_token), "event")
        if raw is None:
            return event
        snapshot = PaymentMethodEvent.from_message(json.loads(raw))
        return snapshot if snapshot.order_key > event.order_key else event
