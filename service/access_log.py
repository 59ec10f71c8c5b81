"""gunicorn's access log as one JSON object per line on stdout (the same shape as the service's own logs).

Query strings are left out: they are not needed to operate the service and may carry anything a caller sends.
A request the app has logged itself, with these same HTTP facts (a webhook, see service.webhooks), gets no
second line.
"""

from __future__ import annotations

import json
import time
from typing import Any

from gunicorn.glogging import Logger

from service.logs import LOGGED_BY_APP


class JsonLogger(Logger):  # type: ignore[misc]  # gunicorn ships no type hints
    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.access_log_enabled or environ.get(LOGGED_BY_APP):
            return
        atoms = self.atoms(resp, req, environ, request_time)
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "level": "INFO",
            "logger": "gunicorn.access",
            "process": "web",
            "message": "request",
            "remote_addr": atoms["h"],
            "method": atoms["m"],
            "path": atoms["U"],
            "status": _int(atoms["s"]),
            "bytes": atoms["B"],
            "duration_ms": atoms["M"],
            "request_id": atoms.get("{x-request-id}o") or atoms.get("{x-request-id}i"),
            "user_agent": atoms["a"],
        }
        self.access_log.info(json.dumps(record, default=str))


def _int(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value
