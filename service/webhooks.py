"""The HTTP surface of the web process: `POST /webhooks/<provider>`, `/healthz`, `/readyz`, `/metrics`.

The webhook view does three things: verify, dedupe, enqueue. It never calls Commerce Layer. It answers 2xx
only once the event is durably queued (or needs no work), 400 for anything that is not an authentic provider
event, 503 with `Retry-After` when Redis cannot take it, and never 500.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import Any

import redis
from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import RequestEntityTooLarge

from service.intake import Intake, QueueUnavailable
from service.logs import log_context
from service.metrics import RedisStateCollector, exposition, metrics
from service.providers import InvalidWebhook, ProviderAdapter
from service.providers.stripe import HANDLED_TYPES
from tasks.celery_app import QUEUE

log = logging.getLogger(__name__)
blueprint = Blueprint("webhooks", __name__)


def _runtime() -> Any:
    return current_app.extensions["walletsync"]


@blueprint.post("/webhooks/<provider>")
def receive(provider: str) -> ResponseReturnValue:
    runtime = _runtime()
    adapter: ProviderAdapter | None = runtime.adapters.get(provider)
    if adapter is None:
        return jsonify(error="not_found", detail=f"no webhook endpoint for provider {provider[:40]!r}"), 404
    started = time.perf_counter()
    outcome, event_type, answer = _receive(provider, adapter, runtime)
    observed = metrics()
    # Only known types become label values: the type string comes from outside.
    observed.webhooks.labels(provider, event_type if event_type in HANDLED_TYPES else "other", outcome).inc()
    observed.ack_seconds.labels(provider).observe(time.perf_counter() - started)
    if outcome == "unavailable":
        observed.enqueue_failures.labels(provider).inc()
    return answer


def _receive(provider: str, adapter: ProviderAdapter, runtime: Any) -> tuple[str, str, ResponseReturnValue]:
    """Verify, dedupe, enqueue. Returns the outcome (for metrics), the event type and the answer."""
    if not _allowed(request.remote_addr, runtime.settings.webhook_allowed_networks):
        log.warning("webhook refused by the IP allow-list", extra={"provider": provider})
        return "forbidden", "", (jsonify(error="forbidden", detail="source address not allowed"), 403)

    body = request.get_data(cache=False)
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    # werkzeug cuts a streamed (chunked) body at the limit without a word: one byte more means it was too large.
    if limit is not None and request.content_length is None and len(body) >= limit and request.stream.read(1):
        raise RequestEntityTooLarge()
    try:
        adapter.verify(body, request.headers)  # type: ignore[arg-type]
        delivery = adapter.parse(body)
    except InvalidWebhook as exc:
        log.info("webhook rejected", extra={"provider": provider, "reason": str(exc)})
        return "invalid", "", (jsonify(error="invalid_webhook", detail=str(exc)), 400)

    intake: Intake = runtime.intake
    with log_context(event_id=delivery.event_id, provider=provider):
        try:
            accepted = intake.accept(provider, delivery)
        except QueueUnavailable as exc:
            log.warning("webhook not accepted: queue unavailable", extra={"reason": str(exc)})
            response = jsonify(error="unavailable", detail="event not queued, retry later", event_id=delivery.event_id)
            response.status_code = 503
            response.headers["Retry-After"] = str(exc.retry_after)
            return "unavailable", delivery.event_type, response
        log.info(
            "webhook accepted",
            extra={"event_type": delivery.event_type, "status": accepted.status.value, "task_id": accepted.task_id},
        )
    return (
        accepted.status.value,
        delivery.event_type,
        (jsonify(status=accepted.status.value, event_id=delivery.event_id), 200),
    )


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
