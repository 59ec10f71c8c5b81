"""The safety net under the broker: events accepted but never finished are published again.

kombu's Redis transport takes a message off the queue (BRPOP) before it records it as unacknowledged; a worker
killed between the two (SIGKILL, OOM, host loss) takes the message with it, and the provider, which got its 2xx,
never sends the event again. So every accepted event stays in a "pending" set, scored by its last sign of
progress, until its outcome is final; a sweep in each worker's main process (one at a time, under a lock)
publishes the stored event again when it has made no progress for `after_seconds`. A second task for an event
is harmless: the sync is idempotent, and a finished event settles from Redis without calling Commerce Layer.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import redis

from service.domain import FINAL_OUTCOMES
from service.eventlog import PENDING_KEY, EventLog
from tasks.celery_app import Publish

log = logging.getLogger(__name__)

_LOCK = "walletsync:redelivery:lock"


class Redeliverer:
    def __init__(self, client: redis.Redis, publish: Publish, *, after_seconds: int, batch: int = 500) -> None:
        self._redis = client
        self._events = EventLog(client)
        self._publish = publish
        self._after = after_seconds
        self._batch = batch

    def sweep(self) -> int:
        """Publish again what is overdue; returns how many events were published."""
        lock = self._redis.lock(_LOCK, timeout=max(self._after, 60), blocking=False)
        if not lock.acquire():
            return 0  # another worker is sweeping
        try:
            overdue = self._redis.zrangebyscore(PENDING_KEY, "-inf", time.time() - self._after, 0, self._batch)
            published = 0
            for raw in overdue:
                member = raw.decode() if isinstance(raw, bytes) else str(raw)
                provider, _, event_id = member.partition(":")
                event = self._events.stored_event(provider, event_id)
                status = self._events.status(provider, event_id).get("status")
                if event is None or status in FINAL_OUTCOMES:
                    self._redis.zrem(PENDING_KEY, member)
                    continue
                task_id = self._publish(event.to_message(), time.time())
                # Progress noted: the next copy, if ever needed, only after another full period.
                self._redis.zadd(PENDING_KEY, {member: time.time()})
                self._events.append_history(provider, event_id, {"redelivered": True, "task_id": task_id})
                log.warning("event published again: no progress", extra={"event_id": event_id, "provider": provider})
                published += 1
            return published
        finally:
            with contextlib.suppress(redis.exceptions.LockError):
                lock.release()

    def run_forever(self, *, interval: float) -> None:
        def loop() -> None:
            while True:
                time.sleep(interval)
                try:
                    self.sweep()
                except Exception:  # a sweep must never kill the worker; the next one tries again
                    log.exception("redelivery sweep failed")

        threading.Thread(target=loop, name="redelivery", daemon=True).start()
