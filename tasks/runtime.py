"""The collaborators a worker process uses, built once per process (after the fork) from its settings.

A `requests.Session` and a Redis connection pool must not be shared across a fork, so they are created lazily
in the process that uses them and rebuilt if the process id changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import redis
import requests

from service.breaker import CircuitBreaker
from service.commercelayer import CommerceLayerClient
from service.config import WorkerSettings
from service.eventlog import DeliveryCounter, EventLog
from service.ordering import Ordering
from service.ratelimit import RateLimiter
from service.redis_store import connect
from service.snapshots import BURST_QUIET_SECONDS, Snapshots
from service.tokens import RedisTokenStore


@dataclass(frozen=True)
class WorkerRuntime:
    settings: WorkerSettings
    redis: redis.Redis
    commercelayer: CommerceLayerClient
    events: EventLog
    ordering: Ordering
    deliveries: DeliveryCounter
    snapshots: Snapshots


def build_runtime(settings: WorkerSettings) -> WorkerRuntime:
    client = connect(settings.redis_url)
    session = requests.Session()
    session.headers["User-Agent"] = "walletsync/0.1"
    return WorkerRuntime(
        settings=settings,
        redis=client,
        commercelayer=CommerceLayerClient(
            settings.commercelayer,
            session=session,
            tokens=RedisTokenStore(client),
            breaker=CircuitBreaker(client, settings.breaker),
            limiter=RateLimiter(client, windows=settings.rate_limits),
        ),
        events=EventLog(client),
        ordering=Ordering(client),
        deliveries=DeliveryCounter(client),
        snapshots=Snapshots(client, burst_quiet=BURST_QUIET_SECONDS),
    )


_runtime: tuple[int, WorkerRuntime] | None = None


def current_runtime() -> WorkerRuntime:
    global _runtime
    if _runtime is None or _runtime[0] != os.getpid():
        _runtime = (os.getpid(), build_runtime(WorkerSettings.from_environ()))
    return _runtime[1]
