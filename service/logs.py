"""Structured logging: one JSON object per line on stdout, for the web and the worker alike.

Context that belongs to the current request or task (`request_id`, `event_id`, `provider`, `task_id`,
`payment_source_id`) is bound with `log_context(...)` and added to every record logged inside it.
Only identifiers are ever logged: never a payload, a card detail, a secret or a token.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pythonjsonlogger.json import JsonFormatter

# Set in a request's WSGI environ when the app's own line already carries the request's HTTP facts, so that
# gunicorn's access logger (service.access_log) does not write a second line for it.
LOGGED_BY_APP = "walletsync.logged"
CONTEXT_FIELDS = ("request_id", "event_id", "provider", "task_id", "payment_source_id")
_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("walletsync_log_context", default=None)


def bind_context(**fields: str | None) -> contextvars.Token[dict[str, str] | None]:
    """Add `fields` to the context of every record logged from here on; undo with `reset_context`."""
    return _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}})


def reset_context(token: contextvars.Token[dict[str, str] | None]) -> None:
    _context.reset(token)


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    token = bind_context(**fields)
    try:
        yield
    finally:
        reset_context(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in (_context.get() or {}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def configure_logging(level: str = "INFO", *, process: str) -> None:
    """Replace the root handlers with one JSON handler on stdout; `process` is "web" or "worker"."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={"process": process},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    )
    handler.addFilter(_ContextFilter())
    # Nothing here prints where a call was made from, the thread or the process id: skip collecting them for
    # every record (the "Optimization" table of Python's logging HOWTO). Each saved a stack walk or a syscall
    # per line on the webhook's path.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # urllib3 logs full URLs at DEBUG; keep it quiet even when the service runs at DEBUG.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
