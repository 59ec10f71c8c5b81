"""Prometheus metrics of the web and worker processes, correct across several processes.

gunicorn and Celery both fork workers, so metrics use prometheus_client's multiprocess mode: each process writes
its values to files under `PROMETHEUS_MULTIPROC_DIR`, and a scrape adds them up. prometheus_client decides at
import time whether it is in that mode, so it is imported here only when the metrics are first built, after the
entry point (gunicorn.conf.py, the worker's start-up) has prepared the directory (`prepare_multiprocess_dir`).

Gauges that describe shared state (queue depth, dead letters, breaker state) are read from Redis at scrape time
rather than kept per process. Labels only ever hold values from small fixed sets (never ids, never secrets).
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client import Counter, Histogram

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600, 4 * 3600, 24 * 3600)


@dataclass(frozen=True)
class Metrics:
    webhooks: Counter
    ack_seconds: Histogram
    enqueue_failures: Counter
    task_outcomes: Counter
    retries: Counter
    commercelayer_calls: Counter
    sync_lag_seconds: Histogram


_metrics: Metrics | None = None
_lock = threading.Lock()


def metrics() -> Metrics:
    """The process's metrics, built on first use (see the module docstring for why not at import)."""
    global _metrics
    with _lock:
        if _metrics is None:
            from prometheus_client import Counter, Histogram

            _metrics = Metrics(
                webhooks=Counter(
                    "walletsync_webhooks_received",
                    "Webhook requests by provider, event type and answer",
                    ["provider", "event_type", "outcome"],
                ),
                ack_seconds=Histogram(
                    "walletsync_webhook_ack_seconds",
                    "Time from receiving a webhook to answering it",
                    ["provider"],
                    buckets=LATENCY_BUCKETS,
                ),
                enqueue_failures=Counter(
                    "walletsync_enqueue_failures",
                    "Webhooks answered 503 because Redis could not take them",
                    ["provider"],
                ),
                task_outcomes=Counter(
                    "walletsync_task_outcomes",
                    "Sync tasks by outcome (applied, duplicate, stale, unchanged, unmatched, dead)",
                    ["provider", "outcome"],
                ),
                retries=Counter("walletsync_task_retries", "Sync tasks rescheduled, by reason", ["reason"]),
                commercelayer_calls=Counter(
                    "walletsync_commercelayer_calls",
                    "Commerce Layer HTTP calls by method, route and status (or timeout / connection_error)",
                    ["method", "route", "status"],
                ),
                sync_lag_seconds=Histogram(
                    "walletsync_sync_lag_seconds",
                    "From the provider's event creation to the Commerce Layer write",
                    ["provider"],
                    buckets=LAG_BUCKETS,
                ),
            )
        return _metrics


def prepare_multiprocess_dir(base: str | None, role: str) -> str:
    """Point `PROMETHEUS_MULTIPROC_DIR` at `<base>/<role>` (web and worker never share files), emptied.

    Must run before prometheus_client is imported in this process (at process start, before forking)."""
    root = Path(base) if base else Path("/tmp") / f"walletsync-metrics-{os.getpid()}"
    directory = root / role
    shutil.rmtree(directory, ignore_errors=True)  # values of a previous run must not be added to this one
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    return str(directory)


def mark_process_dead(pid: int) -> None:
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class RedisStateCollector:
    """Shared state read from Redis at scrape time: queue depth, unacknowledged messages, dead letters, breaker."""

    def __init__(self, client: redis.Redis, *, queue: str) -> None:
        self._redis = client
        self._queue = queue

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("walletsync_redis_up", "1 when Redis answered this scrape")
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.llen(self._queue)
            pipe.hlen("unacked")
            pipe.zcard("walletsync:dead")
            pipe.pttl("walletsync:breaker:open")
            pipe.exists("walletsync:breaker:half_open")
            depth, unacked, dead, open_ms, half_open = pipe.execute()
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily("walletsync_queue_depth", "Sync tasks waiting in the queue", value=depth)
        yield GaugeMetricFamily(
            "walletsync_queue_unacked", "Sync tasks delivered to a worker and not yet acknowledged", value=unacked
        )
        yield GaugeMetricFamily("walletsync_dead_letters", "Events in the dead-letter store", value=dead)
        state = "open" if open_ms > 0 else "half_open" if half_open else "closed"
        breaker = GaugeMetricFamily(
            "walletsync_breaker_state", "Circuit breaker state (1 for the current one)", labels=["state"]
        )
        for name in ("closed", "half_open", "open"):
            breaker.add_metric([name], 1 if name == state else 0)
        yield breaker


def exposition(state: RedisStateCollector | None) -> tuple[bytes, str]:
    """The text to answer a scrape with: every process's metrics plus the shared state."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    metrics()  # make sure the families exist (with no samples yet) even before the first event
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        output = generate_latest(registry)
    else:
        output = generate_latest(REGISTRY)
    if state is not None:
        shared = CollectorRegistry()
        shared.register(state)  # a duck-typed collector, as the library documents
        output += generate_latest(shared)
    return output, CONTENT_TYPE_LATEST


def serve_worker_metrics(port: int, state: RedisStateCollector) -> None:
    """The worker's own metrics endpoint (in the Celery main process, aggregating its pool children)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the http.server API names it so
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body, content_type = exposition(state)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every few seconds would drown the worker's log

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)  # all interfaces: scraped from other hosts
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
