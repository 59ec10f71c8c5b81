"""The sync task: deserialize, call `service.sync.sync_payment_method`, apply the one retry policy.

Every way out is explicit: a final outcome recorded in the event's status record; a retry published with a
countdown (the original message is acknowledged only after the retry is safely on the queue); or a dead letter
with its reason. If even the retry cannot be published (Redis gone), the message is rejected *with* requeue,
so the broker keeps it: Celery's own default here would delete it.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, NoReturn

import redis
from celery import Task, shared_task
from celery.exceptions import Reject

from service.domain import Outcome, PaymentMethodEvent
from service.errors import CommerceLayerError
from service.logs import log_context
from service.ordering import SourceBusy
from service.retrying import GiveUp, next_step
from service.sync import sync_payment_method as sync
from tasks.celery_app import SYNC_TASK
from tasks.runtime import WorkerRuntime, current_runtime

log = logging.getLogger(__name__)


def sync_payment_method(self: Task, message: dict[str, Any], accepted_at: float | None = None) -> str:
    runtime = current_runtime()
    try:
        event = PaymentMethodEvent.from_message(message)
    except (KeyError, TypeError, ValueError) as exc:
        # Only our own web process publishes these; a malformed one is a bug, not something to retry.
        log.error("sync task with a malformed message dropped", extra={"error": type(exc).__name__})
        return Outcome.DEAD.value
    with log_context(event_id=event.event_id, provider=event.provider, task_id=self.request.id):
        try:
            return _run(self, event, runtime, accepted_at=accepted_at or time.time())
        except redis.RedisError as exc:
            # Our state store (also the broker) is unreachable: keep the message for a later delivery.
            log.warning("redis unavailable during sync; message kept", extra={"error": type(exc).__name__})
            raise Reject(f"redis unavailable: {type(exc).__name__}", requeue=True) from None


# Registered by name; `max_retries=None` because the budget is ours (service.retrying), counted in Redis.
sync_payment_method_task = shared_task(bind=True, name=SYNC_TASK, max_retries=None)(sync_payment_method)


def _run(task: Task, event: PaymentMethodEvent, runtime: WorkerRuntime, *, accepted_at: float) -> str:
    try:
        result = sync(event, wallets=runtime.commercelayer, ordering=runtime.ordering)
    except SourceBusy:
        # Another task is writing this card right now. Waiting is not a failure: no attempt is counted.
        _retry_later(task, random.uniform(0.5, 2.0))
    except CommerceLayerError as error:
        attempts = runtime.events.record_attempt(event, error=error.reason)
        step = next_step(error, attempts=attempts, age_seconds=time.time() - accepted_at, policy=runtime.settings.retry)
        if isinstance(step, GiveUp):
            runtime.events.dead_letter(event, reason=step.reason)
            log.error("event dead-lettered", extra={"reason": step.reason, "attempts": attempts})
            return Outcome.DEAD.value
        runtime.events.record(
            event.provider,
            event.event_id,
            Outcome.RETRYING,
            note={"error": error.reason, "attempt": attempts, "countdown": step.countdown},
        )
        log.warning("sync failed; retrying", extra={"error": error.reason, "countdown": step.countdown})
        _retry_later(task, step.countdown)

    runtime.events.record(
        event.provider,
        event.event_id,
        result.outcome,
        note={"sources": {source.source_id: source.outcome.value for source in result.sources}},
    )
    log.info("event synced", extra={"outcome": result.outcome.value, "sources": len(result.sources)})
    return result.outcome.value


def _retry_later(task: Task, countdown: float) -> NoReturn:
    try:
        raise task.retry(countdown=countdown)
    except Reject as rejected:
        # Celery turns a failed retry publish into Reject(requeue=False), which deletes the message on Redis.
        raise Reject(rejected.reason, requeue=True) from None
