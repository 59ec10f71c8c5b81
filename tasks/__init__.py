"""The worker's entry point: `celery -A tasks worker`.

The Celery app exists at import time but reads nothing then: its settings come from the environment the first
time Celery asks for them (`on_configure`), and the worker's own settings are checked as soon as a worker
starts (`celeryd_init`), so a missing variable stops it at once with one line naming it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from celery import Celery, signals

from service.config import BrokerSettings, ConfigError, WorkerSettings
from tasks.celery_app import celery_settings, create_celery

app: Celery = create_celery()


def _exit_on_config_error(error: ConfigError) -> None:
    sys.stderr.write(f"walletsync worker: {error}\n")
    sys.stderr.flush()
    raise SystemExit(2)


def _configure_from_environment(sender: Celery, **_: Any) -> None:
    try:
        sender.conf.update(celery_settings(BrokerSettings.from_environ()))
    except ConfigError as error:
        _exit_on_config_error(error)


def _check_worker_settings(**_: Any) -> None:
    """In the worker's main process, before the pool forks: settings, logging, metrics."""
    try:
        settings = WorkerSettings.from_environ()
    except ConfigError as error:
        _exit_on_config_error(error)
    from service.logs import configure_logging
    from service.metrics import MULTIPROC_ENV, prepare_multiprocess_dir

    configure_logging(settings.log_level, process="worker")
    prepare_multiprocess_dir(os.environ.get(MULTIPROC_ENV), "worker")
    if settings.metrics_port:
        _serve_metrics(settings)
    _start_redelivery(settings)


def _start_redelivery(settings: WorkerSettings) -> None:
    from service.redelivery import Redeliverer
    from service.redis_store import connect
    from tasks.celery_app import celery_publisher, create_celery

    publish = celery_publisher(create_celery(BrokerSettings.from_environ()))
    redeliverer = Redeliverer(connect(settings.redis_url), publish, after_seconds=settings.redeliver_after_seconds)
    redeliverer.run_forever(interval=min(60.0, settings.redeliver_after_seconds / 4))


def _serve_metrics(settings: WorkerSettings) -> None:
    import logging

    from service.metrics import RedisStateCollector, serve_worker_metrics
    from service.redis_store import connect
    from tasks.celery_app import QUEUE

    try:
        serve_worker_metrics(settings.metrics_port, RedisStateCollector(connect(settings.redis_url), queue=QUEUE))
    except OSError as error:
        # Another worker on this host has the port: the sync matters more than this process's metrics.
        logging.getLogger(__name__).error(
            "worker metrics endpoint not started", extra={"port": settings.metrics_port, "error": str(error)}
        )


def _forget_process_metrics(**_: Any) -> None:
    from service.metrics import mark_process_dead

    mark_process_dead(os.getpid())


def _keep_our_logging(**_: Any) -> None:
    """Connected so that Celery leaves the logging configuration to us (JSON on stdout)."""


app.on_configure.connect(_configure_from_environment, weak=False)
signals.celeryd_init.connect(_check_worker_settings, weak=False)
signals.setup_logging.connect(_keep_our_logging, weak=False)
signals.worker_process_shutdown.connect(_forget_process_metrics, weak=False)

__all__ = ["app"]
