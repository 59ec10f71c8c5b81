"""The webhook's own task message must be the message Celery's `send_task` puts on the Redis queue.

The web process queues through its intake script (one round trip) instead of Celery's publisher. These tests hold
the message it builds against one that `send_task` wrote to a real Redis, and have kombu and Celery decode it
the way a worker does, so an upgrade of either that changes the layout fails here.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from kombu.transport.virtual import Message

from service.config import BrokerSettings
from tasks.celery_app import QUEUE, SYNC_TASK, celery_publisher, create_celery
from tasks.envelope import sync_task_envelope

EVENT = {
    "provider": "stripe",
    "event_id": "evt_envelope1",
    "event_type": "payment_method.updated",
    "event_created": 1_700_000_000,
    "payment_source_token": "pm_envelope1",
    "customer_token": "cus_envelope1",
    "status": "active",
    "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2034, "funding": "crédit", "country": None},
}

# Differ on every message by design.
UNIQUE_HEADERS = {"id", "root_id", "origin"}
UNIQUE_PROPERTIES = {"correlation_id", "reply_to", "delivery_tag"}


def sent_by_celery(redis_url: str, client: redis.Redis) -> dict[str, Any]:
    celery_publisher(create_celery(BrokerSettings(redis_url=redis_url)))(EVENT, 1234.5)
    [raw] = client.lrange(QUEUE, 0, -1)
    client.delete(QUEUE)
    return dict(json.loads(raw))


def test_the_envelope_is_laid_out_as_send_task_lays_it_out(redis_url: str, redis_client: redis.Redis) -> None:
    reference = sent_by_celery(redis_url, redis_client)
    task = sync_task_envelope(create_celery(BrokerSettings(redis_url=redis_url)))(EVENT, 1234.5)
    ours = json.loads(task.payload)

    assert task.queue == QUEUE
    assert ours.keys() == reference.keys()
    assert ours["body"] == reference["body"]  # same args, kwargs and embed, serialized and encoded alike
    for part in ("content-type", "content-encoding"):
        assert ours[part] == reference[part]
    assert ours["headers"].keys() == reference["headers"].keys()
    for name, value in reference["headers"].items():
        if name not in UNIQUE_HEADERS:
            assert ours["headers"][name] == value, name
    assert ours["properties"].keys() == reference["properties"].keys()
    for name, value in reference["properties"].items():
        if name not in UNIQUE_PROPERTIES:
            assert ours["properties"][name] == value, name
    assert ours["headers"]["id"] == ours["headers"]["root_id"] == ours["properties"]["correlation_id"] == task.task_id


def test_a_worker_side_decode_yields_the_task_its_id_and_its_arguments(redis_url: str) -> None:
    celery = create_celery(BrokerSettings(redis_url=redis_url))
    task = sync_task_envelope(celery)(EVENT, 1234.5)
    with celery.connection_for_read() as connection:
        channel = connection.default_channel
        message = Message(json.loads(task.payload), channel=channel)
        args, kwargs, _embed = message.decode()
    assert message.headers["task"] == SYNC_TASK
    assert message.headers["id"] == task.task_id
    assert message.delivery_info == {"exchange": "", "routing_key": QUEUE}
    assert message.delivery_tag
    assert args == [EVENT]
    assert kwargs == {"accepted_at": 1234.5}


def test_every_message_has_its_own_task_id_and_delivery_tag(redis_url: str) -> None:
    envelope = sync_task_envelope(create_celery(BrokerSettings(redis_url=redis_url)))
    first, second = (json.loads(envelope(EVENT, 1.0).payload) for _ in range(2))
    assert first["headers"]["id"] != second["headers"]["id"]
    assert first["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]


def test_the_headers_name_the_event_without_its_card(redis_url: str) -> None:
    payload = sync_task_envelope(create_celery(BrokerSettings(redis_url=redis_url)))(EVENT, 1.0).payload
    headers = json.loads(payload)["headers"]
    assert headers["argsrepr"] == "[<stripe event evt_envelope1>]"
    assert "4242" not in json.dumps(headers)
