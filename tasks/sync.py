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
from celery.exceptions import Reject, SoftTimeLimitExceeded

from service.breaker import BreakerOpen
from service.domain import Outcome, PaymentMethodEvent
from service.errors import CommerceLayerError, ErrorKind
from service.logs import log_context
from service.metrics import metrics
from service.ordering import SourceBusy
from service.ratelimit import RateLimited
from service.retrying import GiveUp, next_step
from service.snapshots import Settling
from service.sync import sync_payment_method as sync
from tasks.celery_app import SYNC_TASK
from tasks.runtime import WorkerRuntime, current_runtime

log = logging.getLogger(__name__)

# A message whose deliveries keep ending without the task finishing (its worker killed: OOM, segfault, hard time
# limit) is delivered again by `task_reject_on_worker_lost`; after this many it is dead-lettered, not looped.
MAX_DELIVERIES = 5
REDIS_WAIT_SECONDS = 20.0


def sync_payment_method(self: Task, message: dict[str, Any], accepted_at: float | None = None) -> str:
    runtime = current_runtime()
    try:
        event = PaymentMethodEvent.from_message(message)
    except (KeyError, TypeError, ValueError) as exc:
        # Only our own web process publishes these; a malformed one is a bug, not something to retry.
        log.error("sync task with a malformed message dropped", extra={"error": type(exc).__name__})
        return Outcome.DEAD.value
    task_id = str(self.request.id)
    with log_context(event_id=event.event_id, provider=event.provider, task_id=task_id):
        try:
            deliveries = runtime.deliveries.start(task_id)
            try:
                if deliveries > MAX_DELIVERIES:
                    reason = f"poison message: {deliveries - 1} deliveries ended with the worker lost"
                    return _dead(event, runtime, reason=reason, attempts=deliveries - 1)
                return _run(self, event, runtime, accepted_at=accepted_at or time.time())
            finally:
                # Reached whenever this delivery ends in the task (returned, retried, rejected, failed), which a
                # killed worker never does: only those deliveries keep counting.
                runtime.deliveries.finish(task_id)
        except redis.RedisError as exc:
            # Our state store (also the broker) is unreachable. Wait a little for it, then hand the message back
            # to the broker: requeued if Redis is back, else kept unacknowledged and delivered again later.
            log.warning("redis unavailable during sync; message kept", extra={"error": type(exc).__name__})
            _wait_for_redis(runtime.redis, REDIS_WAIT_SECONDS)
            raise Reject(f"redis unavailable: {type(exc).__name__}", requeue=True) from None


# Registered by name; `max_retries=None` because the budget is ours (service.retrying), counted in Redis.
sync_payment_method_task = shared_task(bind=True, name=SYNC_TASK, max_retries=None)(sync_payment_method)


def _run(task: Task, event: PaymentMethodEvent, runtime: WorkerRuntime, *, accepted_at: float) -> str:
    cap = runtime.settings.retry.backoff_cap_seconds
    try:
        result = sync(event, wallets=runtime.commercelayer, ordering=runtime.ordering, snapshots=runtime.snapshots)
    except SourceBusy:
        # Another task is writing this card right now. Waiting is not a failure: no attempt is counted.
        _retry_later(task, random.uniform(0.5, 2.0), reason="source_busy")
    except Settling as settling:
        # The card's events are arriving in a burst: write the newest once they stop. Not a failure.
        _wait(task, settling.retry_after, cap=cap, jitter=(0.05, 0.25), reason="settling")
    except RateLimited as limited:
        # No budget left in Commerce Layer's rate limit: come back when it frees. Not a failure.
        # Its turn (see service.ratelimit): a little jitter only, so that refused tasks keep their spacing.
        _wait(task, limited.retry_after, cap=cap, jitter=(0, 0.1), reason="rate_limited")
    except BreakerOpen as open_breaker:
        # Commerce Layer is failing hard; the event waits for it without spending its retry budget.
        _wait(task, open_breaker.retry_after, cap=cap, jitter=(0, 3.0), reason="breaker_open")
    except CommerceLayerError as error:
        return _failed(task, event, runtime, error, accepted_at=accepted_at)
    except SoftTimeLimitExceeded:
        timeout = CommerceLayerError(ErrorKind.TRANSIENT, detail="task time limit exceeded")
        return _failed(task, event, runtime, timeout, accepted_at=accepted_at)
    except redis.RedisError:
        raise  # handled by the caller: the message goes back to the broker
    except Exception as exc:
        # A bug, not a Commerce Layer answer. Closed by default: kept as a dead letter with the reason.
        log.exception("unexpected error in sync")
        bug = CommerceLayerError(ErrorKind.PERMANENT, detail=f"internal error: {type(exc).__name__}")
        return _failed(task, event, runtime, bug, accepted_at=accepted_at)

    sources = {source.source_id: source.outcome.value for source in result.sources}
    if result.written is not None and result.written_outcome is not None:
        # A newer event of the same card was written in this one's stead (coalescing): its record says so.
        note = {"sources": sources, "written_by_task_of": event.event_id}
        runtime.events.record_outcome(result.written, result.written_outcome, note=note)
        metrics().task_outcomes.labels(event.provider, "coalesced").inc()
    outcome = runtime.events.record_outcome(event, result.outcome, note={"sources": sources})
    log.info("event synced", extra={"outcome": outcome.value, "sources": len(result.sources)})
    observed = metrics()
    observed.task_outcomes.labels(event.provider, result.outcome.value).inc()
    if result.outcome is Outcome.APPLIED:
        observed.sync_lag_seconds.labels(event.provider).observe(max(time.time() - event.event_created, 0))
    return outcome.value


def _failed(
    task: Task, event: PaymentMethodEvent, runtime: WorkerRuntime, error: CommerceLayerError, *, accepted_at: float
) -> str:
    """Count the attempt; dead-letter the event (returning `dead`) or retry it later (raising)."""
    attempts = runtime.events.record_attempt(event, error=error.reason)
    age = time.time() - accepted_at
    step = next_step(error, attempts=attempts, age_seconds=age, policy=runtime.settings.retry)
    if isinstance(step, GiveUp):
        return _dead(event, runtime, reason=step.reason, attempts=attempts)
    runtime.events.record(
        event.provider,
        event.event_id,
        Outcome.RETRYING,
        note={"error": error.reason, "attempt": attempts, "countdown": step.countdown},
    )
    log.warning("sync failed; retrying", extra={"error": error.reason, "countdown": step.countdown})
    _retry_later(task, step.countdown, reason=error.kind.value)


def _dead(event: PaymentMethodEvent, runtime: WorkerRuntime, *, reason: str, attempts: int) -> str:
    runtime.events.dead_letter(event, reason=reason)
    log.error("event dead-lettered", extra={"reason": reason, "attempts": attempts})
    metrics().task_outcomes.labels(event.provider, Outcome.DEAD.value).inc()
    return Outcome.DEAD.value


def _wait(task: Task, seconds: float, *, cap: float, jitter: tuple[float, float], reason: str) -> NoReturn:
    """Reschedule for a wait that is not a failure (no attempt counted). Capped like a backoff, far below the
    broker's visibility timeout: a task held for its countdown longer than that would be delivered twice."""
    _retry_later(task, min(seconds, cap) + random.uniform(*jitter), reason=reason)


def _retry_later(task: Task, countdown: float, *, reason: str) -> NoReturn:
    metrics().retries.labels(reason).inc()
    try:
        raise task.retry(countdown=countdown)
    except Reject as rejected:
        # Celery turns a failed retry publish into Reject(requeue=False), which deletes the message on Redis.
        raise Reject(rejected.reason, requeue=True) from None


def _wait_for_redis(client: redis.Redis, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            client.ping()
            return
        except redis.RedisError:
            time.sleep(0.5)
