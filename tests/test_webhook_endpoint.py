"""POST /webhooks/stripe through the real Flask app, a real Redis and the real Celery publisher."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from service import create_app
from service.config import Secret, WebSettings
from service.intake import seen_key
from tasks.celery_app import QUEUE
from tests.support import FIXTURES, WEBHOOK_SECRET, RedisServer, free_port, sign, signed_request, stripe_event


def settings(redis_url: str, **overrides: Any) -> WebSettings:
    return WebSettings(redis_url=redis_url, stripe_webhook_secrets=(Secret(WEBHOOK_SECRET),), **overrides)


@pytest.fixture
def app(redis_url: str) -> Flask:
    return create_app(settings(redis_url), configure_logs=False)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def post(client: FlaskClient, event: dict[str, Any], **kwargs: Any) -> Any:
    body, headers = signed_request(event, **kwargs)
    return client.post("/webhooks/stripe", data=body, headers=headers)


def queued_messages(redis_client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in redis_client.lrange(QUEUE, 0, -1)]


@pytest.mark.parametrize(
    "name",
    [
        "payment_method.attached",
        "payment_method.updated",
        "payment_method.automatically_updated",
        "payment_method.detached",
    ],
)
def test_a_handled_event_is_queued_durably_before_the_answer(
    client: FlaskClient, redis_client: redis.Redis, name: str
) -> None:
    event = stripe_event(name)
    response = post(client, event)
    assert response.status_code == 200
    assert response.get_json() == {"status": "queued", "event_id": event["id"]}
    [message] = queued_messages(redis_client)
    assert message["headers"]["task"] == "walletsync.sync_payment_method"
    assert redis_client.hget(f"walletsync:event:stripe:{event['id']}", "status") == b"queued"


def test_the_queued_message_carries_no_billing_details(client: FlaskClient, redis_client: redis.Redis) -> None:
    post(client, stripe_event("payment_method.updated"))
    raw = b"".join(redis_client.lrange(QUEUE, 0, -1))
    for personal in (b"Fake Street", b"94102", b"jenny@example.com", b"+15555555555"):
        assert personal not in raw


def test_the_same_event_delivered_again_is_a_duplicate_and_not_queued_twice(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    event = stripe_event("payment_method.updated")
    assert post(client, event).get_json()["status"] == "queued"
    second = post(client, event)
    assert second.status_code == 200
    assert second.get_json() == {"status": "duplicate", "event_id": event["id"]}
    assert len(queued_messages(redis_client)) == 1


@pytest.mark.parametrize(
    "name", ["setup_intent.succeeded", "customer.source.updated", "thin.v1.payment_method.automatically_updated"]
)
def test_an_event_type_we_do_not_handle_is_acknowledged_as_ignored(
    client: FlaskClient, redis_client: redis.Redis, name: str
) -> None:
    event = json.loads((FIXTURES / "stripe" / f"{name}.json").read_text())
    response = post(client, event)
    assert response.status_code == 200
    assert response.get_json() == {"status": "ignored", "event_id": event["id"]}
    assert queued_messages(redis_client) == []
    assert redis_client.hget(f"walletsync:event:stripe:{event['id']}", "status") == b"ignored"


def assert_nothing_recorded(redis_client: redis.Redis) -> None:
    assert queued_messages(redis_client) == []
    assert [key for key in redis_client.keys("walletsync:*")] == []


def test_a_missing_signature_is_a_400_and_nothing_is_recorded(client: FlaskClient, redis_client: redis.Redis) -> None:
    response = client.post("/webhooks/stripe", data=json.dumps(stripe_event("payment_method.updated")))
    assert response.status_code == 400
    assert response.get_json() == {"error": "invalid_webhook", "detail": "missing Stripe-Signature header"}
    assert_nothing_recorded(redis_client)


def test_a_wrong_signature_is_a_400_and_nothing_is_recorded(client: FlaskClient, redis_client: redis.Redis) -> None:
    response = post(client, stripe_event("payment_method.updated"), secret="whsec_not_ours_at_all")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_webhook"
    assert_nothing_recorded(redis_client)


def test_a_stale_timestamp_is_a_400(client: FlaskClient, redis_client: redis.Redis) -> None:
    response = post(client, stripe_event("payment_method.updated"), timestamp=int(time.time()) - 301)
    assert response.status_code == 400
    assert "tolerance" in response.get_json()["detail"]
    assert_nothing_recorded(redis_client)


def test_a_future_timestamp_is_a_400(client: FlaskClient, redis_client: redis.Redis) -> None:
    response = post(client, stripe_event("payment_method.updated"), timestamp=int(time.time()) + 3600)
    assert response.status_code == 400
    assert_nothing_recorded(redis_client)


def test_a_signed_body_that_is_not_a_stripe_event_is_a_400(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = b'{"hello": "world"}'
    response = client.post("/webhooks/stripe", data=body, headers={"Stripe-Signature": sign(body)})
    assert response.status_code == 400
    assert response.get_json()["detail"] == "body is not a Stripe event"
    assert_nothing_recorded(redis_client)


def test_a_body_over_the_limit_is_a_413(redis_url: str, redis_client: redis.Redis) -> None:
    client = create_app(settings(redis_url, max_body_bytes=2048), configure_logs=False).test_client()
    event = stripe_event("payment_method.updated", padding="x" * 4096)
    response = post(client, event)
    assert response.status_code == 413
    assert response.get_json()["error"] == "request_entity_too_large"
    assert_nothing_recorded(redis_client)


def test_the_default_body_limit_is_one_mebibyte(client: FlaskClient, redis_client: redis.Redis) -> None:
    event = stripe_event("payment_method.updated", padding="x" * (1024 * 1024))
    assert post(client, event).status_code == 413


def test_an_unknown_provider_is_a_404(client: FlaskClient) -> None:
    response = client.post("/webhooks/paypal", data=b"{}")
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


def test_a_get_on_the_webhook_is_a_405_in_json(client: FlaskClient) -> None:
    response = client.get("/webhooks/stripe")
    assert response.status_code == 405
    assert response.is_json


def test_health_is_ok_without_checking_dependencies(redis_url: str) -> None:
    down = create_app(settings(f"redis://127.0.0.1:{free_port()}/0"), configure_logs=False).test_client()
    assert down.get("/healthz").status_code == 200


def test_ready_follows_redis(client: FlaskClient, redis_url: str) -> None:
    assert client.get("/readyz").status_code == 200
    down = create_app(settings(f"redis://127.0.0.1:{free_port()}/0"), configure_logs=False).test_client()
    assert down.get("/readyz").status_code == 503


def test_redis_refusing_writes_is_a_503_with_nothing_queued_or_marked_seen(private_redis: RedisServer) -> None:
    """Out of memory under `noeviction`, Redis refuses the intake script as a whole: no half-accepted event."""
    client = create_app(settings(private_redis.url), configure_logs=False).test_client()
    store = redis.Redis.from_url(private_redis.url)
    event = stripe_event("payment_method.updated")
    store.config_set("maxmemory", 1)
    try:
        response = post(client, event)
    finally:
        store.config_set("maxmemory", 0)
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert store.keys("*") == []
    # The provider's retry then goes through.
    assert post(client, event).get_json()["status"] == "queued"
    assert len(queued_messages(store)) == 1


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def test_redis_down_is_a_quick_503_and_nothing_is_marked_seen(private_redis: RedisServer) -> None:
    client = create_app(settings(private_redis.url), configure_logs=False).test_client()
    event = stripe_event("payment_method.updated")
    private_redis.stop()
    started = time.monotonic()
    response = post(client, event)
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert time.monotonic() - started < 10
    private_redis.start()
    check = redis.Redis.from_url(private_redis.url)
    assert check.exists(seen_key("stripe", event["id"])) == 0
    assert post(client, event).get_json()["status"] == "queued"


def test_a_concurrent_delivery_in_flight_is_asked_to_retry(client: FlaskClient, redis_client: redis.Redis) -> None:
    event = stripe_event("payment_method.updated")
    redis_client.set(seen_key("stripe", event["id"]), "claimed", ex=60)
    response = post(client, event)
    assert response.status_code == 503
    assert queued_messages(redis_client) == []


def test_the_request_id_from_the_load_balancer_is_echoed(client: FlaskClient) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "lb-1234"})
    assert response.headers["X-Request-ID"] == "lb-1234"
    assert client.get("/healthz").headers["X-Request-ID"]


def test_the_ip_allow_list_refuses_other_addresses(redis_url: str, redis_client: redis.Redis) -> None:
    import ipaddress

    client = create_app(
        settings(redis_url, webhook_allowed_networks=(ipaddress.ip_network("10.0.0.0/8"),)), configure_logs=False
    ).test_client()
    body, headers = signed_request(stripe_event("payment_method.updated"))
    assert (
        client.post(
            "/webhooks/stripe", data=body, headers=headers, environ_base={"REMOTE_ADDR": "192.0.2.1"}
        ).status_code
        == 403
    )
    assert (
        client.post(
            "/webhooks/stripe", data=body, headers=headers, environ_base={"REMOTE_ADDR": "10.1.2.3"}
        ).status_code
        == 200
    )


def test_accepting_an_event_is_one_redis_round_trip(client: FlaskClient, redis_url: str) -> None:
    """Dedupe, enqueue, status record and snapshot: one script, nothing else on the hot path."""
    import subprocess

    post(client, stripe_event("payment_method.updated", id="evt_warmup"))  # connections and scripts warmed up
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    monitor = subprocess.Popen(["redis-cli", "-p", port, "monitor"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        assert post(client, stripe_event("payment_method.updated", id="evt_counted")).status_code == 200
        time.sleep(0.3)
    finally:
        monitor.terminate()
    lines = monitor.communicate(timeout=10)[0].splitlines()[1:]  # the first line is redis-cli's OK
    # MONITOR shows the client's command, then each command the script runs tagged "[... lua]".
    sent = [line.split('"')[1].upper() for line in lines if '"' in line and " lua] " not in line]
    run_by_script = [line.split('"')[1].upper() for line in lines if " lua] " in line]
    assert sent == ["EVALSHA"]
    assert run_by_script[:4] == ["GET", "LPUSH", "SET", "EXISTS"]


def test_the_queued_record_never_overwrites_a_status_already_there(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """A status written first (say by a worker that ran an operator replay) stays; `queued` only fills a gap."""
    from service.eventlog import HISTORY_LIMIT

    redis_client.hset("walletsync:event:stripe:evt_racer", mapping={"status": "applied", "received_at": "then"})
    redis_client.rpush("walletsync:event:stripe:evt_racer:history", *(["{}"] * HISTORY_LIMIT))
    event = stripe_event("payment_method.updated", id="evt_racer")
    assert post(client, event).get_json()["status"] == "queued"
    record = redis_client.hgetall("walletsync:event:stripe:evt_racer")
    assert record[b"status"] == b"applied"
    assert record[b"received_at"] == b"then"
    assert record[b"event_type"] == b"payment_method.updated"
    history = redis_client.lrange("walletsync:event:stripe:evt_racer:history", 0, -1)
    assert len(history) == HISTORY_LIMIT  # kept at its limit
    assert json.loads(history[-1])["status"] == "queued"


def test_the_intake_records_an_event_as_the_event_log_would(client: FlaskClient, redis_client: redis.Redis) -> None:
    """The intake script writes the status record in Lua; it must match `EventLog.record` field for field."""
    from service.domain import Outcome, PaymentMethodEvent
    from service.eventlog import PENDING_KEY, EventLog, event_fields
    from service.snapshots import snapshot_key

    event = stripe_event("payment_method.updated", id="evt_by_intake")
    assert post(client, event).get_json()["status"] == "queued"
    by_intake = EventLog(redis_client).status("stripe", "evt_by_intake")
    [entry] = EventLog(redis_client).history("stripe", "evt_by_intake")

    stored = PaymentMethodEvent.from_message(json.loads(by_intake["event"]))
    assert stored.event_id == "evt_by_intake"
    twin = PaymentMethodEvent.from_message({**stored.to_message(), "event_id": "evt_by_python"})
    EventLog(redis_client).record(
        "stripe",
        "evt_by_python",
        Outcome.QUEUED,
        fields={**event_fields(twin), "task_id": by_intake["task_id"]},
        note={"task_id": by_intake["task_id"]},
    )
    by_python = EventLog(redis_client).status("stripe", "evt_by_python")
    [python_entry] = EventLog(redis_client).history("stripe", "evt_by_python")

    assert by_intake.keys() == by_python.keys()
    for name in by_intake.keys() - {"event_id", "event", "received_at", "updated_at"}:
        assert by_intake[name] == by_python[name], name
    assert json.loads(by_intake["event"]) == {**json.loads(by_python["event"]), "event_id": "evt_by_intake"}
    assert entry.keys() == python_entry.keys()
    assert entry["status"] == "queued"
    assert entry["task_id"]
    assert redis_client.ttl("walletsync:event:stripe:evt_by_intake") > 34 * 24 * 3600
    assert redis_client.ttl("walletsync:event:stripe:evt_by_intake:history") > 34 * 24 * 3600
    assert redis_client.zscore(PENDING_KEY, "stripe:evt_by_intake") is not None
    snapshot = redis_client.hgetall(snapshot_key("stripe", stored.payment_source_token))
    assert json.loads(snapshot[b"event"])["event_id"] == "evt_by_intake"
