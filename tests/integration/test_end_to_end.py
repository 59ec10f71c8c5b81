"""End to end with real processes: gunicorn, a Celery worker, a private redis-server and the simulator over HTTP.

Signed events of every handled type go in at the webhook; the test asserts the exact requests Commerce Layer
received (method, path, query, headers, a JSON:API body valid against the official update schema) and the
resulting wallet entries.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import pytest
import redis
import requests

from tests.integration.processes import Process, eventually, start_simulator, start_web, start_worker
from tests.support import FIXTURES, RedisServer, signed_request, stripe_event

pytestmark = pytest.mark.integration

PM = "pm_1Pgc75B7WZ01zgkWlHVgdEGJ"
SCHEMA = json.loads((FIXTURES / "customer_payment_source.schema.json").read_text())


def update_validator() -> jsonschema.protocols.Validator:
    """The official `customerPaymentSourceUpdate` schema, with OpenAPI's `nullable` turned into JSON Schema."""

    def nullable(node: Any) -> Any:
        if isinstance(node, dict):
            node = {k: nullable(v) for k, v in node.items()}
            if node.pop("nullable", False) and "type" in node:
                node["type"] = [node["type"], "null"]
            return node
        if isinstance(node, list):
            return [nullable(v) for v in node]
        return node

    document = {
        "$ref": "#/components/schemas/customerPaymentSourceUpdate",
        "components": nullable(SCHEMA["components"]),
    }
    return jsonschema.Draft7Validator(document)


class System:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.redis_server = RedisServer(tmp / "redis").start()
        self.redis = redis.Redis.from_url(self.redis_server.url)
        self.simulator, self.simulator_url = start_simulator(tmp)
        self.web, self.web_url = start_web(tmp, redis_url=self.redis_server.url)
        self.worker = start_worker(tmp, redis_url=self.redis_server.url, simulator_url=self.simulator_url)
        self.processes: list[Process] = [self.worker, self.web, self.simulator]

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        self.redis_server.stop()

    def seed(self, *sources: dict[str, Any]) -> list[dict[str, Any]]:
        response = requests.post(f"{self.simulator_url}/_sim/sources", json=list(sources), timeout=5)
        assert response.status_code == 201, response.text
        return list(response.json()["data"])

    def source(self, source_id: str) -> dict[str, Any]:
        return dict(requests.get(f"{self.simulator_url}/_sim/sources/{source_id}", timeout=5).json()["data"])

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.simulator_url}/_sim/requests", params={"since": since}, timeout=5)
        return list(answer.json()["requests"])

    def send(self, event: dict[str, Any]) -> requests.Response:
        body, headers = signed_request(event)
        return requests.post(f"{self.web_url}/webhooks/stripe", data=body, headers=headers, timeout=10)

    def status(self, event_id: str) -> str | None:
        value = self.redis.hget(f"walletsync:event:stripe:{event_id}", "status")
        return value.decode() if value else None

    def settle(self, event_id: str, *, timeout: float = 60) -> str:
        final = {"applied", "duplicate", "stale", "unchanged", "unmatched", "dead"}
        return str(
            eventually(lambda: self.status(event_id) in final and self.status(event_id), timeout=timeout, what=event_id)
        )


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = System(Path(tmp_path_factory.mktemp("e2e")))
    yield running
    running.stop()


def last_seq(system: System) -> int:
    seen = system.requests()
    return int(seen[-1]["seq"]) if seen else 0


def event_for(name: str, event_id: str, created: int, **object_changes: Any) -> dict[str, Any]:
    return stripe_event(name, id=event_id, created=created, object={"id": PM, **object_changes})


def test_each_handled_event_type_patches_the_wallet_entry_exactly_as_documented(system: System) -> None:
    [entry] = system.seed(
        {"payment_source_token": PM, "customer_token": "cus_before", "metadata": {"wallet_label": "Jenny's Visa"}}
    )
    validator = update_validator()
    base = int(time.time()) - 100
    steps = [
        ("payment_method.attached", "evt_e2eAttached", {}),
        ("payment_method.updated", "evt_e2eUpdated", {}),
        ("payment_method.automatically_updated", "evt_e2eAutoUpd", {}),
        ("payment_method.detached", "evt_e2eDetached", {}),
    ]
    for offset, (name, event_id, changes) in enumerate(steps):
        since = last_seq(system)
        event = event_for(name, event_id, base + offset, **changes)
        response = system.send(event)
        assert response.status_code == 200
        assert response.json() == {"status": "queued", "event_id": event_id}
        assert system.settle(event_id) == "applied"

        calls = [r for r in system.requests(since) if r["path"].startswith("/api/")]
        lookup, patch = calls[0], calls[-1]
        assert (lookup["method"], lookup["path"]) == ("GET", "/api/customer_payment_sources")
        assert parse_qs(urlsplit("?" + lookup["query"]).query)["filter[q][payment_source_token_eq]"] == [PM]
        assert int(lookup["args"]["page[size]"][0]) <= 25
        assert (patch["method"], patch["path"]) == ("PATCH", f"/api/customer_payment_sources/{entry['id']}")
        headers = {k.lower(): v for k, v in patch["headers"].items()}
        assert headers["accept"] == "application/vnd.api+json"
        assert headers["content-type"] == "application/vnd.api+json"
        assert headers["authorization"].startswith("Bearer ")
        assert patch["status"] == 200
        body = patch["body"]
        validator.validate(body)
        assert body["data"]["type"] == "customer_payment_sources"
        assert body["data"]["id"] == entry["id"]
        sync = body["data"]["attributes"]["metadata"]["payment_sync"]
        card = event["data"]["object"]["card"]
        assert sync["card"] == {k: card[k] for k in ("brand", "last4", "exp_month", "exp_year", "funding", "country")}
        assert (sync["event_id"], sync["event_type"], sync["event_created"]) == (event_id, name, base + offset)
        assert sync["status"] == ("detached" if name.endswith("detached") else "active")
        assert body["data"]["attributes"]["metadata"]["wallet_label"] == "Jenny's Visa"
        assert "Fake Street" not in json.dumps(body)

    stored = system.source(entry["id"])["attributes"]
    assert stored["customer_token"] == "cus_QXg1o8vcGmoR32"  # set by attach, left alone by detach
    assert stored["metadata"]["wallet_label"] == "Jenny's Visa"
    assert stored["metadata"]["payment_sync"]["status"] == "detached"
    assert stored["metadata"]["payment_sync"]["event_id"] == "evt_e2eDetached"


def test_a_duplicate_delivery_is_answered_duplicate_and_never_written_twice(system: System) -> None:
    [entry] = system.seed({"payment_source_token": "pm_e2eDuplicate", "metadata": {}})
    event = stripe_event(
        "payment_method.updated", id="evt_e2eDup", created=int(time.time()) - 5, object={"id": "pm_e2eDuplicate"}
    )
    assert system.send(event).json()["status"] == "queued"
    assert system.settle("evt_e2eDup") == "applied"
    since = last_seq(system)
    assert system.send(event).json() == {"status": "duplicate", "event_id": "evt_e2eDup"}
    time.sleep(1)
    assert [r for r in system.requests(since) if r["method"] == "PATCH"] == []
    patches = [r for r in system.requests() if r["method"] == "PATCH" and r["path"].endswith(entry["id"])]
    assert len(patches) == 1


def test_a_legacy_card_id_is_matched_like_a_payment_method(system: System) -> None:
    [entry] = system.seed({"payment_source_token": "card_1PgaftB7WZ01zgkWm3waTcFp"})
    event = stripe_event(
        "payment_method.updated",
        id="evt_e2eLegacy",
        created=int(time.time()),
        object={"id": "card_1PgaftB7WZ01zgkWm3waTcFp"},
    )
    system.send(event)
    assert system.settle("evt_e2eLegacy") == "applied"
    assert system.source(entry["id"])["attributes"]["metadata"]["payment_sync"]["event_id"] == "evt_e2eLegacy"


def test_an_event_without_a_wallet_entry_ends_unmatched(system: System) -> None:
    event = stripe_event(
        "payment_method.updated", id="evt_e2eNobody", created=int(time.time()), object={"id": "pm_nobody"}
    )
    assert system.send(event).json()["status"] == "queued"
    assert system.settle("evt_e2eNobody") == "unmatched"


def test_an_older_event_arriving_late_is_skipped_as_stale(system: System) -> None:
    [entry] = system.seed({"payment_source_token": "pm_e2eOrder"})
    now = int(time.time())
    newer = stripe_event("payment_method.updated", id="evt_e2eNewer", created=now, object={"id": "pm_e2eOrder"})
    older = stripe_event("payment_method.updated", id="evt_e2eOlder", created=now - 60, object={"id": "pm_e2eOrder"})
    system.send(newer)
    assert system.settle("evt_e2eNewer") == "applied"
    system.send(older)
    assert system.settle("evt_e2eOlder") == "stale"
    assert system.source(entry["id"])["attributes"]["metadata"]["payment_sync"]["event_id"] == "evt_e2eNewer"


def test_a_permanent_422_ends_in_a_dead_letter_with_its_reason(system: System) -> None:
    [entry] = system.seed({"payment_source_token": "pm_e2eRejected"})
    requests.post(f"{system.simulator_url}/_sim/faults", json={"source_statuses": {entry["id"]: 422}}, timeout=5)
    try:
        event = stripe_event(
            "payment_method.updated", id="evt_e2eRejected", created=int(time.time()), object={"id": "pm_e2eRejected"}
        )
        assert system.send(event).json()["status"] == "queued"
        assert system.settle("evt_e2eRejected") == "dead"
        record = {
            k.decode(): v.decode() for k, v in system.redis.hgetall("walletsync:event:stripe:evt_e2eRejected").items()
        }
        assert "422" in record["dead_reason"]
        assert system.redis.zscore("walletsync:dead", "stripe:evt_e2eRejected") is not None
    finally:
        requests.post(f"{system.simulator_url}/_sim/faults", json={"reset": True}, timeout=5)


def test_transient_failures_are_retried_until_applied(system: System) -> None:
    [entry] = system.seed({"payment_source_token": "pm_e2eFlaky"})
    requests.post(f"{system.simulator_url}/_sim/faults", json={"error_rate": 1.0, "error_statuses": [503]}, timeout=5)
    event = stripe_event(
        "payment_method.updated", id="evt_e2eFlaky", created=int(time.time()), object={"id": "pm_e2eFlaky"}
    )
    assert system.send(event).json()["status"] == "queued"
    eventually(lambda: system.status("evt_e2eFlaky") == "retrying", timeout=30, what="a retry")
    requests.post(f"{system.simulator_url}/_sim/faults", json={"reset": True}, timeout=5)
    assert system.settle("evt_e2eFlaky", timeout=90) == "applied"
    record = system.redis.hgetall("walletsync:event:stripe:evt_e2eFlaky")
    assert int(record[b"attempts"]) >= 1
    assert b"503" in record[b"last_error"]
    assert system.source(entry["id"])["attributes"]["metadata"]["payment_sync"]["event_id"] == "evt_e2eFlaky"


def test_an_expired_token_is_renewed_once_and_the_call_repeated(system: System) -> None:
    [entry] = system.seed({"payment_source_token": "pm_e2eToken"})
    requests.post(f"{system.simulator_url}/_sim/tokens/expire", timeout=5)
    since = last_seq(system)
    event = stripe_event(
        "payment_method.updated", id="evt_e2eToken", created=int(time.time()), object={"id": "pm_e2eToken"}
    )
    system.send(event)
    assert system.settle("evt_e2eToken") == "applied"
    calls = system.requests(since)
    assert [c["status"] for c in calls if c["path"] == "/api/customer_payment_sources"][:2] == [401, 200]
    assert len([c for c in calls if c["path"] == "/oauth/token"]) == 1
    assert system.source(entry["id"])["attributes"]["metadata"]["payment_sync"]["event_id"] == "evt_e2eToken"


def test_status_records_are_kept_at_least_thirty_days(system: System) -> None:
    ttl = system.redis.ttl("walletsync:event:stripe:evt_e2eAttached")
    assert ttl >= 30 * 24 * 3600


def test_no_secret_or_token_appears_in_any_log(system: System) -> None:
    tokens = {
        c["headers"].get("Authorization", c["headers"].get("authorization", "")).removeprefix("Bearer ")
        for c in system.requests()
        if c["path"].startswith("/api/")
    } - {""}
    logs = system.web.log() + system.worker.log()
    assert tokens
    for secret in ["whsec_test_walletsync_0123456789abcdef", "sim-client-secret", *tokens]:
        assert secret not in logs
    for personal in ("Fake Street", "jenny@example.com", "94102"):
        assert personal not in logs


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample in exposition text (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def test_the_worker_exposes_its_metrics(system: System) -> None:
    text = requests.get(system.worker.metrics_url, timeout=5).text
    assert sample(text, "walletsync_task_outcomes_total", outcome="applied") >= 1
    assert sample(text, "walletsync_commercelayer_calls_total", method="PATCH", status="200") >= 1
    assert sample(text, "walletsync_sync_lag_seconds_count") >= 1
    assert sample(text, "walletsync_dead_letters") >= 1
    assert sample(text, "walletsync_breaker_state", state="closed") == 1
