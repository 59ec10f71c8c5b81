"""Request ids: taken from the load balancer's `X-Request-ID` (or made up), bound to logs and echoed back."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

from service.logs import log_context

HEADER = "X-Request-ID"
# Only a sane token is trusted: a header is attacker-controlled and ends up in log lines.
_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def install_request_id(app: Flask) -> None:
    @app.before_request
    def _bind() -> None:
        incoming = request.headers.get(HEADER, "")
        g.request_id = incoming if _ACCEPTABLE.match(incoming) else uuid.uuid4().hex
        # remote_addr is the client's once ProxyFix has applied the trusted X-Forwarded-For hops.
        g.log_context = log_context(request_id=g.request_id, remote_addr=request.remote_addr)
        g.log_context.__enter__()

    @app.after_request
    def _echo(response: Response) -> Response:
        if "request_id" in g:
            response.headers[HEADER] = g.request_id
        return response

    @app.teardown_request
    def _unbind(_: BaseException | None) -> None:
        context = g.pop("log_context", None)
        if context is not None:
            context.__exit__(None, None, None)
