"""The worker's life: killed mid-PATCH, stopped with SIGTERM, handed a message that keeps killing it."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from service.config import BrokerSettings
from service.domain import PaymentMethodEvent
from tasks.celery_app import QUEUE, SYNC_TASK, create_celery
from tests.integration.processes import eventually, start_simulator, start_web, start_worker
from tests.integration.test_end_to_end import System
from tests.support import RedisServer, stripe_event

pytestmark = pytest.mark.integration


class Lifecycle(System):
    """Like the end-to-end system, but the test starts and stops workers itself."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.redis_server = RedisServer(tmp / "redis", appendonly=True).start()
        self.redis = redis.Redis.from_url(self.redis_server.url)
        self.simulator, self.simulator_url = start_simulator(tmp)
        self.web, self.web_url = start_web(tmp, redis_url=self.redis_server.url)
        self.processes = [self.web, self.simulator]

    def worker(self, name: str) -> object:
        worker = start_worker(
            self.tmp, redis_url=self.redis_server.url, simulator_url=self.simulator_url, name=name, concurrency=1,
            BROKER_VISIBILITY_TIMEOUT="15", SYNC_BACKOFF_CAP_SECONDS="5",
        )  # fmt: skip
        self.processes.insert(0, worker)
        return worker


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lifecycle]:
    running = Lifecycle(Path(tmp_path_factory.mktemp("lifecycle")))
    yield running
    running.stop()


def faults(system: System, **settings: object) -> None:
    requests.post(f"{system.simulator_url}/_sim/faults", json=settings, timeout=5).raise_for_status()


def test_a_worker_killed_mid_patch_leaves_the_event_to_be_delivered_again(system: Lifecycle) -> None:
    [entry] = system.seed({"payment_source_token": "pm_lifeKilled"})
    faults(system, latency_ms=4000, latency_rate=1.0)  # every call hangs long enough to kill the worker during it
    worker = system.worker("victim")
    event = stripe_event(
        "payment_method.updated", id="evt_lifeKilled", created=int(time.time()), object={"id": "pm_lifeKilled"}
    )
    assert system.send(event).json()["status"] == "queued"
    eventually(
        lambda: any(r["path"].startswith("/api/") for r in system.requests()), timeout=30, what="a call in flight"
    )
    worker.stop(signal.SIGKILL)  # type: ignore[attr-defined]
    faults(system, reset=True)
    system.worker("rescuer")
    # Redelivered after the visibility timeout (15 s here), then applied once in effect.
    assert system.settle("evt_lifeKilled", timeout=120) == "applied"
    stored = system.source(entry["id"])["attributes"]["metadata"]["payment_sync"]
    assert stored["event_id"] == "evt_lifeKilled"


def test_sigterm_lets_the_worker_finish_what_it_holds(system: Lifecycle) -> None:
    [entry] = system.seed({"payment_source_token": "pm_lifeTerm"})
    faults(system, latency_ms=2000, latency_rate=1.0)
    worker = system.worker("terminated")
    event = stripe_event(
        "payment_method.updated", id="evt_lifeTerm", created=int(time.time()), object={"id": "pm_lifeTerm"}
    )
    since = system.requests()[-1]["seq"] if system.requests() else 0
    system.send(event)
    eventually(lambda: any(r["path"].startswith("/api/") for r in system.requests(since)), timeout=30, what="a call")
    code = worker.stop(signal.SIGTERM, timeout=60)  # type: ignore[attr-defined]
    faults(system, reset=True)
    assert code is not None
    status = system.status("evt_lifeTerm")
    if status not in ("applied",):
        # Not finished within the soft shutdown: it went back to the queue and another worker applies it.
        system.worker("after-term")
    assert system.settle("evt_lifeTerm", timeout=120) == "applied"
    assert system.source(entry["id"])["attributes"]["metadata"]["payment_sync"]["event_id"] == "evt_lifeTerm"


def test_a_message_that_keeps_killing_its_worker_is_dead_lettered(system: Lifecycle) -> None:
    system.worker("poison-eater")
    event = PaymentMethodEvent(
        provider="stripe", event_id="evt_lifePoison", event_type="payment_method.updated",
        event_created=int(time.time()), payment_source_token="pm_lifePoison", customer_token=None, status="active",
    )  # fmt: skip
    # Five earlier deliveries of this message ended with their worker lost (as after five OOM kills).
    system.redis.set("walletsync:deliveries:poison-task-1", 5)
    celery = create_celery(BrokerSettings(redis_url=system.redis_server.url))
    celery.send_task(SYNC_TASK, args=[event.to_message()], task_id="poison-task-1")
    assert system.settle("evt_lifePoison", timeout=60) == "dead"
    record = system.redis.hgetall("walletsync:event:stripe:evt_lifePoison")
    assert b"poison" in record[b"dead_reason"]
    assert json.loads(record[b"event"])["payment_source_token"] == "pm_lifePoison"
    assert system.redis.llen(QUEUE) == 0
