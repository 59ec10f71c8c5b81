"""The redelivery sweep: accepted events that made no progress are published again, once per period."""

from __future__ import annotations

from typing import Any

import redis

from service.domain import Card, Outcome, PaymentMethodEvent
from service.eventlog import PENDING_KEY, EventLog, event_fields
from service.redelivery import Redeliverer


def event(event_id: str) -> PaymentMethodEvent:
    return PaymentMethodEvent(
        provider="stripe",
        event_id=event_id,
        event_type="payment_method.updated",
        event_created=1000,
        payment_source_token="pm_x",
        customer_token=None,
        status="active",
        card=Card(last4="4242"),
    )


def accept(events: EventLog, accepted: PaymentMethodEvent) -> None:
    events.record("stripe", accepted.event_id, Outcome.QUEUED, fields=event_fields(accepted))


def test_an_event_without_progress_is_published_again_once_per_period(redis_client: redis.Redis) -> None:
    events, published = EventLog(redis_client), []

    def publish(message: dict[str, Any], accepted_at: float) -> str:
        published.append(message)
        return "task-again"

    stuck, fresh, done = event("evt_stuck"), event("evt_fresh"), event("evt_done")
    for accepted in (stuck, fresh, done):
        accept(events, accepted)
    events.record_outcome(done, Outcome.APPLIED, note={})
    redis_client.zadd(PENDING_KEY, {"stripe:evt_stuck": 1.0})  # no progress since long ago
    sweeper = Redeliverer(redis_client, publish, after_seconds=60)
    assert sweeper.sweep() == 1
    assert published == [stuck.to_message()]
    assert sweeper.sweep() == 0  # the next copy only after another full period
    assert {m.decode() for m in redis_client.zrange(PENDING_KEY, 0, -1)} == {"stripe:evt_stuck", "stripe:evt_fresh"}
    assert events.history("stripe", "evt_stuck")[-1]["redelivered"] is True


def test_a_final_event_leaves_the_pending_set(redis_client: redis.Redis) -> None:
    events = EventLog(redis_client)
    accepted = event("evt_final")
    accept(events, accepted)
    assert redis_client.zscore(PENDING_KEY, "stripe:evt_final") is not None
    events.record_outcome(accepted, Outcome.STALE, note={})
    assert redis_client.zscore(PENDING_KEY, "stripe:evt_final") is None


def test_only_one_worker_sweeps_at_a_time(redis_client: redis.Redis) -> None:
    redis_client.set("walletsync:redelivery:lock", "someone-else")
    assert Redeliverer(redis_client, lambda message, at: "x", after_seconds=60).sweep() == 0
