"""Accepting a verified event: dedupe on its id and put it durably on the queue, in one atomic step.

One Lua script does it all in a single Redis round trip: if the event id was seen, it answers so; else it pushes
the Celery task message onto the queue (laid out by `tasks.envelope`), marks the id seen, records the event as
queued (status record, history, pending set) and offers its snapshot for burst coalescing. A script runs
atomically, and the append-only file holds its writes as one transaction, so there is no state in which an id is
marked seen without a task behind it, or a task is queued without its record. When the script fails (Redis down,
out of memory, a timeout) the caller answers 503 and the provider retries; after a timeout the script may have
run all the same, and the retry is then answered `duplicate`, which is true.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from enum import StrEnum

import redis

from service.domain import Outcome
from service.eventlog import (
    PENDING_KEY,
    RECORD_QUEUED_LUA,
    RETENTION_SECONDS,
    EventLog,
    event_json,
    event_key,
    history_key,
    now_iso,
)
from service.ordering import encode
from service.providers import Delivery
from service.snapshots import OFFER_SNAPSHOT_LUA, SNAPSHOT_TTL_SECONDS, snapshot_key
from tasks.envelope import Envelope

log = logging.getLogger(__name__)

_ACCEPTED = "accepted"

# KEYS: seen, queue, event record, its history, pending set, snapshot.
# ARGV: task message, provider, event id, event type, created, payment source token, event JSON, task id, stamp,
# score (accepted at), snapshot order. Returns nil when queued, else what the seen key holds.
_ACCEPT = (
    RECORD_QUEUED_LUA
    + OFFER_SNAPSHOT_LUA
    + f"""
local seen = redis.call('GET', KEYS[1])
if seen then return seen end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('SET', KEYS[1], '{_ACCEPTED}', 'EX', {RETENTION_SECONDS})
record_queued(KEYS[3], KEYS[4], KEYS[5], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9],
              ARGV[10])
offer_snapshot(KEYS[6], ARGV[11], ARGV[7], {SNAPSHOT_TTL_SECONDS})
return false
"""
)


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
    def __init__(self, client: redis.Redis, envelope: Envelope) -> None:
        self._envelope = envelope
        self._events = EventLog(client)
        self._accept = client.register_script(_ACCEPT)

    def accept(self, provider: str, delivery: Delivery) -> Accepted:
        event = delivery.event
        if event is None:
            self._record_ignored(provider, delivery)
            return Accepted(Acceptance.IGNORED)

        accepted_at = time.time()
        task = self._envelope(event.to_message(), accepted_at)
        event_id = delivery.event_id
        keys = [
            seen_key(provider, event_id),
            task.queue,
            event_key(provider, event_id),
            history_key(provider, event_id),
            PENDING_KEY,
            snapshot_key(provider, event.payment_source_token),
        ]
        args: list[str | int | float] = [
            task.payload,
            provider,
            event_id,
            event.event_type,
            event.event_created,
            event.payment_source_token,
            event_json(event),
            task.task_id,
            now_iso(accepted_at),
            accepted_at,
            encode(event.order_key),
        ]
        try:
            seen = self._accept(keys=keys, args=args)
        except redis.RedisError as exc:
            raise QueueUnavailable(f"redis unavailable: {type(exc).__name__}") from None
        if seen is None:
            return Accepted(Acceptance.QUEUED, task.task_id)
        if seen == _ACCEPTED.encode():
            return Accepted(Acceptance.DUPLICATE)
        # Claimed, not accepted: another delivery of this event is being accepted by a process of an earlier
        # release (which claimed before publishing); not a duplicate until it is through.
        raise QueueUnavailable("the same event is being accepted by another request", retry_after=2)

    def _record_ignored(self, provider: str, delivery: Delivery) -> None:
        try:
            self._events.record(
                provider, delivery.event_id, Outcome.IGNORED, fields={"event_type": delivery.event_type}
            )
        except redis.RedisError:
            # Nothing to lose: the event needs no work. The answer stays "ignored" so the provider stops sending.
            log.warning("ignored event not recorded (redis unavailable)", extra={"event_id": delivery.event_id})
