"""Request ids: taken from the load balancer's `X-Request-ID` (or made up), bound to logs and echoed back.

A WSGI middleware rather than Flask request hooks: the three hooks cost the webhook, the hottest path, a
twentieth of its CPU. It sits inside ProxyFix, so the client address it binds is the one ProxyFix resolved.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from service.logs import bind_context, reset_context

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

HEADER = "X-Request-ID"
# Only a sane token is trusted: a header is attacker-controlled and ends up in log lines.
_ACCEPTABLE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestIds:
    def __init__(self, app: WSGIApplication) -> None:
        self._app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        # A made-up id only correlates log lines: it needs to be unique, not unpredictable (no syscall for it).
        request_id = incoming if _ACCEPTABLE.fullmatch(incoming) else f"{random.getrandbits(128):032x}"

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append((HEADER, request_id))
            return start_response(status, headers, exc_info)

        token = bind_context(request_id=request_id, remote_addr=environ.get("REMOTE_ADDR"))
        try:
            return self._app(environ, start)
        finally:
            reset_context(token)
