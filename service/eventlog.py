"""Every event's status record, its history, and the dead-letter store, all in Redis.

Keys (all kept for `RETENTION_SECONDS`, at least 30 days):
- `walletsync:event:<provider>:<event_id>` hash: provider, event_id, event_type, event_created, status,
  attempts, first_error, last_error, received_at, updated_at, task_id, event (the normalized event as JSON,
  the payload a replay re-runs; it holds no card number, CVC or address).
- `walletsync:event:<provider>:<event_id>:history` list of JSON entries `{"at", "status", ...}`.
- `walletsync:dead` sorted set of `<provider>:<event_id>` scored by the time the event died.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis

from service.domain import FINAL_OUTCOMES, Outcome, PaymentMethodEvent

RETENTION_SECONDS = 35 * 24 * 3600
HISTORY_LIMIT = 200
DEAD_LETTERS_KEY = "walletsync:dead"
# Accepted events not final yet, scored by their last sign of progress (see service.redelivery).
PENDING_KEY = "walletsync:pending"


# The record `EventLog.record(..., Outcome.QUEUED, fields=event_fields(...))` writes, as a Lua function for the
# webhook's intake script (service.intake), which records the event in the same atomic step as it queues it. One
# difference: a status already there (a worker's, say, for an event an operator replayed) is kept, not
# overwritten with `queued`.
RECORD_QUEUED_LUA = f"""
local function record_queued(event, history, pending, provider, event_id, event_type, event_created, token,
                             event_json, task_id, stamp, score)
  local fields = {{'provider', provider, 'event_id', event_id, 'updated_at', stamp, 'event_type', event_type,
                  'event_created', event_created, 'payment_source_token', token, 'event', event_json,
                  'task_id', task_id}}
  if redis.call('EXISTS', event) == 0 then
    -- The usual case: a new record, written whole.
    table.insert(fields, 'status'); table.insert(fields, 'queued')
    table.insert(fields, 'received_at'); table.insert(fields, stamp)
  else
    redis.call('HSETNX', event, 'status', 'queued')
    redis.call('HSETNX', event, 'received_at', stamp)
  end
  redis.call('HSET', event, unpack(fields))
  redis.call('EXPIRE', event, {RETENTION_SECONDS})
  local entries = redis.call('RPUSH', history, cjson.encode({{at = stamp, status = 'queued', task_id = task_id}}))
  if entries > {HISTORY_LIMIT} then redis.call('LTRIM', history, -{HISTORY_LIMIT}, -1) end
  redis.call('EXPIRE', history, {RETENTION_SECONDS})
  redis.call('ZADD', pending, score, provider .. ':' .. event_id)
end
"""


def event_key(provider: str, event_id: str) -> str:
    return f"walletsync:event:{provider}:{event_id}"


def history_key(provider: str, event_id: str) -> str:
    return event_key(provider, event_id) + ":history"


def now_iso(timestamp: float | None = None) -> str:
    moment = time.time() if timestamp is None else timestamp
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment % 1 * 1000):03d}Z"


@dataclass(frozen=True)
class DeadLetter:
    provider: str
    event_id: str
    event_type: str
    reason: str
    attempts: int
    first_error: str
    last_error: str
    received_at: str
    died_at: str
    payload_key: str


class EventLog:
    """Reads and writes status records; every write also appends to the event's history."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def record(
        self,
        provider: str,
        event_id: str,
        status: Outcome,
        *,
        fields: Mapping[str, str | int] | None = None,
        note: Mapping[str, Any] | None = None,
        pipeline: redis.client.Pipeline | None = None,
    ) -> None:
        """Set the status (and any extra fields) and append one history entry, atomically."""
        key = event_key(provider, event_id)
        stamp = now_iso()
        mapping: dict[str, Any] = {"provider": provider, "event_id": event_id, "updated_at": stamp}
        mapping.update(fields or {})
        mapping["status"] = status.value
        entry = {"at": stamp, "status": status.value, **(note or {})}
        pipe = pipeline if pipeline is not None else self._redis.pipeline(transaction=True)
        pipe.hset(key, mapping=cast(Any, mapping))  # redis-py types the mapping invariantly
        pipe.hsetnx(key, "received_at", stamp)
        pipe.expire(key, RETENTION_SECONDS)
        history = history_key(provider, event_id)
        pipe.rpush(history, json.dumps(entry, separators=(",", ":")))
        pipe.ltrim(history, -HISTORY_LIMIT, -1)
        pipe.expire(history, RETENTION_SECONDS)
        member = f"{provider}:{event_id}"
        if status in FINAL_OUTCOMES:
            pipe.zrem(PENDING_KEY, member)
        elif status in (Outcome.QUEUED, Outcome.RETRYING):
            pipe.zadd(PENDING_KEY, {member: time.time()})
        if pipeline is None:
            pipe.execute()

    def record_outcome(self, event: PaymentMethodEvent, outcome: Outcome, *, note: Mapping[str, Any]) -> Outcome:
        """Record the final outcome of a sync and return it as recorded.

        "Already applied" means two different things: a second delivery of an event that was recorded as applied
        keeps that record (history notes the duplicate); an event never recorded final was applied by an earlier
        delivery of its own whose end was lost (its worker killed mid-PATCH, say), so it is recorded as applied."""
        if outcome is Outcome.DUPLICATE:
            current = self._redis.hget(event_key(event.provider, event.event_id), "status")
            status = current.decode() if isinstance(current, bytes) else None
            if status in (Outcome.APPLIED.value, Outcome.UNCHANGED.value):
                self.append_history(event.provider, event.event_id, {"status": outcome.value, **note})
                return Outcome(status)
            if status not in FINAL_OUTCOMES:
                outcome = Outcome.APPLIED
                note = {**note, "applied_by": "an earlier delivery of this event"}
        pipe = self._redis.pipeline(transaction=True)
        self.record(event.provider, event.event_id, outcome, fields=event_fields(event), note=note, pipeline=pipe)
        if outcome is not Outcome.DEAD:
            # A dead letter written after all (by a replayed older event of its card) is no dead letter any more.
            pipe.zrem(DEAD_LETTERS_KEY, f"{event.provider}:{event.event_id}")
        pipe.execute()
        return outcome

    def append_history(self, provider: str, event_id: str, entry: Mapping[str, Any]) -> None:
        key = history_key(provider, event_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.rpush(key, json.dumps({"at": now_iso(), **entry}, separators=(",", ":")))
        pipe.ltrim(key, -HISTORY_LIMIT, -1)
        pipe.expire(key, RETENTION_SECONDS)
        pipe.execute()

    def record_attempt(self, event: PaymentMethodEvent, *, error: str) -> int:
        """Count a failed attempt; keep the first and the last error. Returns the attempt count."""
        key = event_key(event.provider, event.event_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hincrby(key, "attempts", 1)
        pipe.hsetnx(key, "first_error", error)
        pipe.hset(key, "last_error", error)
        attempts = int(pipe.execute()[0])
        return attempts

    def dead_letter(self, event: PaymentMethodEvent, *, reason: str) -> None:
        """Keep the event, with its reason, where an operator will find it; never drop it silently."""
        key = event_key(event.provider, event.event_id)
        pipe = self._redis.pipeline(transaction=True)
        self.record(
            event.provider,
            event.event_id,
            Outcome.DEAD,
            fields={"dead_reason": reason[:500], "died_at": now_iso(), "event": event_json(event)},
            note={"reason": reason[:500]},
            pipeline=pipe,
        )
        pipe.hsetnx(key, "first_error", reason[:500])
        pipe.zadd(DEAD_LETTERS_KEY, {f"{event.provider}:{event.event_id}": time.time()})
        pipe.execute()

    def status(self, provider: str, event_id: str) -> dict[str, str]:
        raw: dict[bytes, bytes] = self._redis.hgetall(event_key(provider, event_id))  # type: ignore[assignment]
        return {_text(k): _text(v) for k, v in raw.items()}

    def history(self, provider: str, event_id: str) -> list[dict[str, Any]]:
        raw = self._redis.lrange(history_key(provider, event_id), 0, -1)
        return [json.loads(item) for item in raw]

    def dead_letters(self, *, older_than: float | None = None) -> list[DeadLetter]:
        """Dead letters, oldest first; `older_than` (seconds) keeps only those that died at least that long ago."""
        upper: float | str = "+inf" if older_than is None else time.time() - older_than
        members = cast(list[bytes], self._redis.zrangebyscore(DEAD_LETTERS_KEY, "-inf", upper))
        letters = []
        for member in members:
            provider, _, event_id = _text(member).partition(":")
            record = self.status(provider, event_id)
            if record.get("status") != Outcome.DEAD.value:
                continue
            letters.append(
                DeadLetter(
                    provider=provider,
                    event_id=event_id,
                    event_type=record.get("event_type", ""),
                    reason=record.get("dead_reason", ""),
                    attempts=int(record.get("attempts", "0") or 0),
                    first_error=record.get("first_error", ""),
                    last_error=record.get("last_error", ""),
                    received_at=record.get("received_at", ""),
                    died_at=record.get("died_at", ""),
                    payload_key=event_key(provider, event_id),
                )
            )
        return letters

    def stored_event(self, provider: str, event_id: str) -> PaymentMethodEvent | None:
        raw = self._redis.hget(event_key(provider, event_id), "event")
        if raw is None:
            return None
        return PaymentMethodEvent.from_message(json.loads(raw))

    def forget_dead_letter(self, provider: str, event_id: str) -> None:
        self._redis.zrem(DEAD_LETTERS_KEY, f"{provider}:{event_id}")


def event_json(event: PaymentMethodEvent) -> str:
    """The normalized event as stored in its status record (the payload a replay re-runs)."""
    return json.dumps(event.to_message(), separators=(",", ":"), sort_keys=True)


def event_fields(event: PaymentMethodEvent) -> dict[str, str | int]:
    """The fields of a status record that describe the event itself."""
    return {
        "event_type": event.event_type,
        "event_created": event.event_created,
        "payment_source_token": event.payment_source_token,
        "event": event_json(event),
    }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class DeliveryCounter:
    """Counts the deliveries of one task message that did not end inside the task (the worker was lost)."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def start(self, task_id: str) -> int:
        pipe = self._redis.pipeline(transaction=True)
        pipe.incr(f"walletsync:deliveries:{task_id}")
        pipe.expire(f"walletsync:deliveries:{task_id}", 7 * 24 * 3600)
        return int(pipe.execute()[0])

    def finish(self, task_id: str) -> None:
        self._redis.delete(f"walletsync:deliveries:{task_id}")
