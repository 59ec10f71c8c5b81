"""The Celery application and the settings that protect events on a Redis broker.

Both processes build their Celery app here: the worker from the environment when Celery first reads its
configuration (`tasks/__init__.py`), the web process from its own validated settings (to publish only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery

from service.config import BrokerSettings

SYNC_TASK = "walletsync.sync_payment_method"
QUEUE = "walletsync"
TASK_SOFT_TIME_LIMIT_SECONDS = 120
TASK_TIME_LIMIT_SECONDS = 150


def celery_settings(broker: BrokerSettings) -> dict[str, Any]:
    # A task still running when the visibility timeout passes would be delivered a second time: keep the hard
    # limit below half of it (and the retry countdowns below a third, see WorkerSettings).
    hard_limit = min(TASK_TIME_LIMIT_SECONDS, broker.visibility_timeout // 2)
    return {
        "broker_url": broker.redis_url,
        "broker_transport_options": {
            "visibility_timeout": broker.visibility_timeout,
            # Look for abandoned (unacknowledged, timed out) messages every few seconds rather than kombu's default
            # of every 100 s, so that a task whose worker was killed is delivered again soon after the timeout.
            "unacked_restore_interval": max(1, min(10, broker.visibility_timeout // 10)),
            "unacked_restore_throttle": 1,
            # Without these kombu passes no timeouts to redis-py and a black-holed Redis hangs the caller.
            # socket_timeout must exceed the BRPOP timeout (1 s) the consumer uses.
            "socket_timeout": 5,
            "socket_connect_timeout": 3,
            "socket_keepalive": True,
            "health_check_interval": 10,
        },
        "broker_connection_timeout": 3,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # workers reconnect by themselves, however long Redis is gone
        # Publishing (operator replays, the redelivery sweep, retries) must fail fast rather than hang.
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_default_queue": QUEUE,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": min(TASK_SOFT_TIME_LIMIT_SECONDS, hard_limit - 2),
        "task_time_limit": hard_limit,
        # SIGTERM: finish what is running for up to this long, then requeue it (Celery ≥ 5.5 soft shutdown).
        "worker_soft_shutdown_timeout": 30.0,
        "worker_enable_soft_shutdown_on_idle": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "enable_utc": True,
    }


def create_celery(broker: BrokerSettings | None = None) -> Celery:
    """A Celery app; configured now when `broker` is given, else left for the caller to configure."""
    app = Celery("walletsync", include=["tasks.sync"], set_as_current=False)
    if broker is not None:
        app.conf.update(celery_settings(broker))
    return app


# Publishes one sync task: (event message, accepted_at) -> task id. Raises on failure (kombu's OperationalError...).
Publish = Callable[[dict[str, Any], float], str]


def celery_publisher(celery: Celery) -> Publish:
    """Publishes one sync task (operator replays, the worker's redelivery sweep; the webhook queues its own
    through `tasks.envelope`)."""

    def publish(message: dict[str, Any], accepted_at: float) -> str:
        result = celery.send_task(
            SYNC_TASK,
            args=[message],
            kwargs={"accepted_at": accepted_at},
            retry=True,
            argsrepr=sync_task_argsrepr(message),
            kwargsrepr="{}",
        )
        return str(result.id)

    return publish


def sync_task_argsrepr(message: dict[str, Any]) -> str:
    # Else Celery puts a repr of the whole event in the headers: CPU on every publish, and card facts in every
    # monitoring view.
    return f"[<{message.get('provider')} event {message.get('event_id')}>]"
