"""Accepting a verified event: dedupe on its id, put it durably on the queue, and only then say so.

The event id is claimed with a lease (`SET NX EX`) before publishing and confirmed after; when publishing fails
the claim is released, and if this process dies in between, the lease runs out by itself. Either way the
provider's next retry gets through: no id is left marked as seen without a task behind it. A publish that timed
out may still have landed, so a second task for the same event is possible; the worker is idempotent.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from service.domain import Outcome
from service.eventlog import RETENTION_SECONDS, EventLog, event_fields
from service.providers import Delivery
from service.redis_store import DeleteIfEqual
from service.snapshots import Snapshots

log = logging.getLogger(__name__)

CLAIM_LEASE_SECONDS = 60
_CLAIMED = "claimed"
_ACCEPTED = "accepted"

# Publishes one sync task; returns the task id. Raises on failure (kombu's OperationalError and friends).
Publish = Callable[[dict[str, Any], float], str]


class Acceptance(StrEnum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"


class QueueUnavailable(Exception):
    """The event could not be put durably on the queue; the caller answers 503 so the provider retries."""

    def __init__(self, reason: str, *, retry_after: int = 5) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Accepted:
    status: Acceptance
    task_id: str | None = None


def seen_key(provider: str, event_id: str) -> str:
    return f"walletsync:seen:{provider}:{event_id}"


class Intake:
    def __init__(self, client: redis.Redis, publish: Publish, *, lease_seconds: int = CLAIM_LEASE_SECONDS) -> None:
        self._redis = client
        self._publish = publish
        self._lease_seconds = lease_seconds
        self._events = EventLog(client)
        self._snapshots = Snapshots(client)
        self._release = DeleteIfEqual(client)

    def accept(self, provider: str, delivery: Delivery) -> Accepted:
        if delivery.event is None:
            self._record_ignored(provider, delivery)
            return Accepted(Acceptance.IGNORED)

        key = seen_key(provider, delivery.event_id)
        try:
            previous = self._redis.set(key, _CLAIMED, nx=True, ex=self._lease_seconds, get=True)
        except redis.RedisError as exc:
            raise QueueUnavailable(f"redis unavailable: {type(exc).__name__}") from None
        if previous is not None:
            if previous == _ACCEPTED.encode():
                return Accepted(Acceptance.DUPLICATE)
            # Another delivery of this event is being queued right now: not accepted yet, so not a duplicate.
            raise QueueUnavailable("the same event is being accepted by another request", retry_after=2)

        accepted_at = time.time()
        try:
            task_id = self._publish(delivery.event.to_message(), accepted_at)
        except Exception as exc:  # kombu raises several types; any failure means "not queued"
            self._release_claim(key)
            raise QueueUnavailable(f"could not enqueue: {type(exc).__name__}") from None

        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(key, _ACCEPTED, ex=RETENTION_SECONDS)
            self._events.record(
                provider,
                delivery.event_id,
                Outcome.QUEUED,
                fields={**event_fields(delivery.event), "task_id": task_id},
                note={"task_id": task_id},
                pipeline=pipe,
                first_status=True,
            )
            # The newest state of this card, so that a burst of its events is written once (service.snapshots).
            self._snapshots.offer(delivery.event, pipeline=pipe)
            pipe.execute()
        except redis.RedisError as exc:
            # The task is on the queue, so the event is safe; only the bookkeeping failed. The claim's lease
            # lets a retry through later, which the worker recognises as a duplicate.
            log.warning(
                "event queued but its status could not be recorded",
                extra={"event_id": delivery.event_id, "provider": provider, "error": type(exc).__name__},
            )
        return Accepted(Acceptance.QUEUED, task_id)

    def _record_ignored(self, provider: str, delivery: Delivery) -> None:
        try:
            self._events.record(
                provider, delivery.event_id, Outcome.IGNORED, fields={"event_type": delivery.event_type}
            )
        except redis.RedisError:
            # Nothing to lose: the event needs no work. The answer stays "ignored" so the provider stops sending.
            log.warning("ignored event not recorded (redis unavailable)", extra={"event_id": delivery.event_id})

    def _release_claim(self, key: str) -> None:
        with contextlib.suppress(redis.RedisError):  # if Redis is gone, the lease expires by itself
            self._release(key, _CLAIMED)
