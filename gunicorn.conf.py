"""gunicorn settings for the web process; gunicorn reads ./gunicorn.conf.py by itself.

`gthread` workers suit short I/O-bound handlers behind a load balancer. Everything an operator tunes comes from
the environment (names in README's settings table). The master validates the service settings before forking,
so a bad variable stops the whole server with one line instead of a crash loop of workers.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        sys.stderr.write(f"walletsync web: configuration error: {name} must be a positive integer\n")
        raise SystemExit(4)
    return int(raw)


bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
worker_class = "gthread"
workers = _int_env("GUNICORN_WORKERS", 2)
threads = _int_env("GUNICORN_THREADS", 4)
timeout = _int_env("GUNICORN_TIMEOUT", 30)
graceful_timeout = 20
keepalive = 5  # below typical load balancer idle timeouts (60 s) is not needed; above 2 s avoids churn
# Recycle workers now and then so slow leaks never matter; jitter keeps them from restarting together.
max_requests = 5000
max_requests_jitter = 500
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = "-"
errorlog = "-"
logger_class = "service.access_log.JsonLogger"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
control_socket_disable = True  # no admin socket in the container's home directory


def on_starting(server: Any) -> None:
    from service.config import ConfigError, WebSettings
    from service.metrics import MULTIPROC_ENV, prepare_multiprocess_dir

    try:
        WebSettings.from_environ()
    except ConfigError as error:
        sys.stderr.write(f"walletsync web: {error}\n")
        sys.stderr.flush()
        raise SystemExit(4) from None
    # Before any worker forks: every worker writes its metrics under this (emptied) directory.
    prepare_multiprocess_dir(os.environ.get(MULTIPROC_ENV), "web")


def child_exit(server: Any, worker: Any) -> None:
    from service.metrics import mark_process_dead

    mark_process_dead(worker.pid)
