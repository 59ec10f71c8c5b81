"""The `/_sim/*` admin endpoints, for tests and people: no auth, never faulted, rate limited or logged.

All answers are `application/json`; errors use the same `{"errors": [...]}` shape as the API.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from simulator.jsonapi import error_response, render_source
from simulator.protocol import JSON, InvalidJSON, Request, Response, json_response, parse_json
from simulator.store import DuplicateIdError, new_source_from_json

if TYPE_CHECKING:
    from simulator.app import Simulator

Handler = Callable[["Simulator", Request, str | None], Response]

_SOURCE = re.compile(r"^/_sim/sources/(?P<id>[^/]+)$")


def handle(sim: Simulator, request: Request) -> Response:
    path = request.path.rstrip("/") or "/"
    handlers: dict[str, Handler]
    argument: str | None = None
    match = _SOURCE.match(path)
    if match:
        handlers = {"GET": _get_source, "DELETE": _delete_source}
        argument = unquote(match["id"])
    else:
        handlers = ROUTES.get(path, {})
    if not handlers:
        return _error(404, "Not found", f"No admin endpoint at {request.path}.", "NOT_FOUND")
    handler = handlers.get(request.method)
    if handler is None:
        allowed = ", ".join(sorted(handlers))
        return _error(405, "Method not allowed", f"Use {allowed}.", "METHOD_NOT_ALLOWED", {"Allow": allowed})
    try:
        return handler(sim, request, argument)
    except BadRequest as bad:
        return _error(400, "Bad request", str(bad), "BAD_REQUEST")


class BadRequest(ValueError):
    pass


def _ok(document: Any, status: int = 200) -> Response:
    return json_response(status, document, content_type=JSON)


def _error(status: int, title: str, detail: str, code: str, headers: dict[str, str] | None = None) -> Response:
    return error_response(status, title, detail, code, headers=headers, content_type=JSON)


def _body(request: Request) -> Any:
    """The parsed JSON body, None when empty; raises BadRequest when it is not JSON."""
    if not request.body.strip():
        return None
    try:
        return parse_json(request.body)
    except InvalidJSON as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None


def _object_body(request: Request) -> dict[str, Any]:
    body = _body(request)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _render_all(sim: Simulator, request: Request) -> list[dict[str, Any]]:
    return [render_source(s, base_url=request.base_url, mode=sim.mode) for s in sim.store.all()]


# -- endpoints ----------------------------------------------------------------------------------------------


def _health(sim: Simulator, request: Request, _: str | None) -> Response:
    return _ok({"status": "ok"})


def _reset(sim: Simulator, request: Request, _: str | None) -> Response:
    body = _object_body(request)
    sample = body.get("sample", False)
    if set(body) - {"sample"} or not isinstance(sample, bool):
        raise BadRequest('the body may only be {"sample": true|false}')
    sim.reset()
    seeded = len(sim.store.seed_sample()) if sample else 0
    return _ok({"status": "reset", "sample_sources": seeded})


def _list_sources(sim: Simulator, request: Request, _: str | None) -> Response:
    return _ok({"data": _render_all(sim, request)})


def _create_sources(sim: Simulator, request: Request, _: str | None) -> Response:
    body = _body(request)
    items = [body] if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise BadRequest("the body must be a JSON list of sources (or one source object)")
    try:
        new = [new_source_from_json(item) for item in items]
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    try:
        created = sim.store.create_many(new)
    except DuplicateIdError as exc:
        return _error(409, "Conflict", f"these ids already exist: {exc}", "CONFLICT")
    rendered = [render_source(s, base_url=request.base_url, mode=sim.mode) for s in created]
    return _ok({"data": rendered}, 201)


def _get_source(sim: Simulator, request: Request, source_id: str | None) -> Response:
    source = sim.store.get(source_id or "")
    if source is None:
        return _error(404, "Record not found", f"No source {source_id}.", "RECORD_NOT_FOUND")
    return _ok({"data": render_source(source, base_url=request.base_url, mode=sim.mode)})


def _delete_source(sim: Simulator, request: Request, source_id: str | None) -> Response:
    if not sim.store.delete(source_id or ""):
        return _error(404, "Record not found", f"No source {source_id}.", "RECORD_NOT_FOUND")
    return Response(status=204)


def _requests(sim: Simulator, request: Request, _: str | None) -> Response:
    since_text = request.arg("since") or "0"
    try:
        since = int(since_text)
    except ValueError:
        raise BadRequest("since must be an integer") from None
    return _ok({"requests": sim.recorder.entries(since)})


def _clear_requests(sim: Simulator, request: Request, _: str | None) -> Response:
    sim.recorder.clear_entries()
    return Response(status=204)


def _stats(sim: Simulator, request: Request, _: str | None) -> Response:
    stats = sim.recorder.stats()
    stats["tokens_issued"] = sim.tokens.issued
    stats["updates_applied"] = sim.store.updates_applied
    stats["faults_injected"] = sim.faults.injected
    stats["sources"] = len(sim.store)
    return _ok(stats)


def _expire_tokens(sim: Simulator, request: Request, _: str | None) -> Response:
    return _ok({"expired": sim.tokens.expire_all()})


def _get_faults(sim: Simulator, request: Request, _: str | None) -> Response:
    return _ok(sim.faults.config.to_json())


def _set_faults(sim: Simulator, request: Request, _: str | None) -> Response:
    try:
        config = sim.faults.configure(_object_body(request))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return _ok(config.to_json())


def _get_rate_limits(sim: Simulator, request: Request, _: str | None) -> Response:
    return _ok(sim.limits.config.to_json())


def _set_rate_limits(sim: Simulator, request: Request, _: str | None) -> Response:
    try:
        config = sim.limits.configure(_object_body(request))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return _ok(config.to_json())


ROUTES: dict[str, dict[str, Handler]] = {
    "/_sim/health": {"GET": _health},
    "/_sim/reset": {"POST": _reset},
    "/_sim/sources": {"GET": _list_sources, "POST": _create_sources},
    "/_sim/requests": {"GET": _requests, "DELETE": _clear_requests},
    "/_sim/stats": {"GET": _stats},
    "/_sim/tokens/expire": {"POST": _expire_tokens},
    "/_sim/faults": {"GET": _get_faults, "POST": _set_faults},
    "/_sim/rate_limits": {"GET": _get_rate_limits, "POST": _set_rate_limits},
}
