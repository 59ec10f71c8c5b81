"""The HTTP surface of the web process: `POST /webhooks/<provider>`, `/healthz`, `/readyz`, `/metrics`.

The webhook view does three things: verify, dedupe, enqueue. It never calls Commerce Layer. It answers 2xx
only once the event is durably queued (or needs no work), 400 for anything that is not an authentic provider
event, 503 with `Retry-After` when Redis cannot take it, and never 500.

Each webhook is logged as one line holding both what happened to the event (id, type, outcome, task) and the
request's HTTP facts (method, path, status, duration), in place of gunicorn's access line for it: one line to
find per delivery, and half the log volume during a card-updater burst (see service.access_log).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis
from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import RequestEntityTooLarge

from service.intake import Intake, QueueUnavailable
from service.logs import LOGGED_BY_APP, log_context
from service.metrics import RedisStateCollector, exposition, metrics
from service.providers import InvalidWebhook, ProviderAdapter
from service.providers.stripe import HANDLED_TYPES
from tasks.celery_app import QUEUE

log = logging.getLogger(__name__)
blueprint = Blueprint("webhooks", __name__)


def _runtime() -> Any:
    return current_app.extensions["walletsync"]


@dataclass(frozen=True)
class Handled:
    """What became of one webhook request: for its answer, its metrics and its log line."""

    outcome: str  # queued, duplicate, ignored, invalid, forbidden, unavailable
    response: Response
    event_id: str | None = None
    event_type: str = ""
    task_id: str | None = None
    reason: str | None = None


@blueprint.post("/webhooks/<provider>")
def receive(provider: str) -> ResponseReturnValue:
    runtime = _runtime()
    adapter: ProviderAdapter | None = runtime.adapters.get(provider)
    if adapter is None:
        return jsonify(error="not_found", detail=f"no webhook endpoint for provider {provider[:40]!r}"), 404
    started = time.perf_counter()
    handled = _receive(provider, adapter, runtime)
    elapsed = time.perf_counter() - started
    observed = metrics()
    # Only known types become label values: the type string comes from outside.
    event_type = handled.event_type if handled.event_type in HANDLED_TYPES else "other"
    observed.webhooks.labels(provider, event_type, handled.outcome).inc()
    observed.ack_seconds.labels(provider).observe(elapsed)
    if handled.outcome == "unavailable":
        observed.enqueue_failures.labels(provider).inc()
    _log(provider, handled, elapsed)
    return handled.response


def _receive(provider: str, adapter: ProviderAdapter, runtime: Any) -> Handled:
    """Verify, dedupe, enqueue."""
    if not _allowed(request.remote_addr, runtime.settings.webhook_allowed_networks):
        return Handled("forbidden", _answer(403, {"error": "forbidden", "detail": "source address not allowed"}))

    body = request.get_data(cache=False)
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    # werkzeug cuts a streamed (chunked) body at the limit without a word: one byte more means it was too large.
    if limit is not None and request.content_length is None and len(body) >= limit and request.stream.read(1):
        raise RequestEntityTooLarge()
    try:
        adapter.verify(body, request.headers)  # type: ignore[arg-type]
        delivery = adapter.parse(body)
    except InvalidWebhook as exc:
        return Handled("invalid", _answer(400, {"error": "invalid_webhook", "detail": str(exc)}), reason=str(exc))

    intake: Intake = runtime.intake
    try:
        with log_context(event_id=delivery.event_id, provider=provider):
            accepted = intake.accept(provider, delivery)
    except QueueUnavailable as exc:
        response = _answer(
            503, {"error": "unavailable", "detail": "event not queued, retry later", "event_id": delivery.event_id}
        )
        response.headers["Retry-After"] = str(exc.retry_after)
        return Handled("unavailable", response, delivery.event_id, delivery.event_type, reason=str(exc))
    status = accepted.status.value
    response = _answer(200, {"status": status, "event_id": delivery.event_id})
    return Handled(status, response, delivery.event_id, delivery.event_type, accepted.task_id)


def _answer(code: int, fields: dict[str, str]) -> Response:
    # Plain json.dumps: Flask's jsonify costs the webhook, the hottest path, more than it gives.
    return Response(json.dumps(fields, separators=(",", ":")), status=code, mimetype="application/json")


_MESSAGES = {
    "invalid": (logging.INFO, "webhook rejected"),
    "forbidden": (logging.WARNING, "webhook refused by the IP allow-list"),
    "unavailable": (logging.WARNING, "webhook not accepted: queue unavailable"),
}


def _log(provider: str, handled: Handled, elapsed: float) -> None:
    level, message = _MESSAGES.get(handled.outcome, (logging.INFO, "webhook accepted"))
    if not log.isEnabledFor(level):
        return  # gunicorn's access line then stands for the request
    fields = {
        "provider": provider,
        "event_id": handled.event_id,
        "event_type": handled.event_type or None,
        "outcome": handled.outcome,
        "task_id": handled.task_id,
        "reason": handled.reason,
        "method": request.method,
        "path": request.path,
        "status": handled.response.status_code,
        "duration_ms": round(elapsed * 1000, 3),
        "user_agent": request.headers.get("User-Agent", "")[:200] or None,
    }
    log.log(level, message, extra={name: value for name, value in fields.items() if value is not None})
    request.environ[LOGGED_BY_APP] = True


@blueprint.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify(status="ok"), 200


@blueprint.get("/readyz")
def readyz() -> ResponseReturnValue:
    client: redis.Redis = _runtime().redis
    try:
        client.ping()
    except redis.RedisError as exc:
        return jsonify(status="unavailable", redis=type(exc).__name__), 503
    return jsonify(status="ready"), 200


@blueprint.get("/metrics")
def prometheus_metrics() -> ResponseReturnValue:
    body, content_type = exposition(RedisStateCollector(_runtime().redis, queue=QUEUE))
    return Response(body, status=200, content_type=content_type)


def _allowed(address: str | None, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    if not networks:
        return True
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in network for network in networks)
