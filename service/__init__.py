"""The walletsync web application: `create_app()` builds it from validated settings (never at import time).

Webhooks come in on `/webhooks/<provider>`, are verified by the provider's adapter, deduplicated and put on the
Celery queue in Redis. Operator commands hang off the same app: `flask --app service <command>`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import redis
from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from service.config import BrokerSettings, ConfigError, WebSettings
from service.intake import Intake
from service.logs import configure_logging
from service.providers import ProviderAdapter, build_adapters
from service.redis_store import connect
from service.requests_context import RequestIds
from tasks.celery_app import Publish, celery_publisher, create_celery
from tasks.envelope import sync_task_envelope


@dataclass(frozen=True)
class WebRuntime:
    settings: WebSettings
    redis: redis.Redis
    adapters: dict[str, ProviderAdapter]
    intake: Intake
    publish: Publish  # publishes one sync task through Celery, for operator replays (webhooks: `intake`)


def create_app(
    settings: WebSettings | None = None,
    *,
    publish: Publish | None = None,
    configure_logs: bool = True,
) -> Flask:
    """Build the app. `settings` default to the environment; `publish` (operator replays) defaults to Celery.

    Read from the environment, a bad setting stops the process with one line naming the variable (exit code 4,
    which also makes a gunicorn master stop instead of respawning workers); this serves `service.wsgi` and the
    operator commands (`flask --app service ...`) alike."""
    if settings is None:
        try:
            settings = WebSettings.from_environ()
        except ConfigError as error:
            sys.stderr.write(f"walletsync web: {error}\n")
            sys.stderr.flush()
            raise SystemExit(4) from None
    if configure_logs:
        configure_logging(settings.log_level, process="web")
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    client = connect(settings.redis_url)
    celery = create_celery(BrokerSettings(redis_url=settings.redis_url))
    if publish is None:
        publish = celery_publisher(celery)
    app.extensions["walletsync"] = WebRuntime(
        settings=settings,
        redis=client,
        adapters=build_adapters(settings),
        intake=Intake(client, sync_task_envelope(celery)),
        publish=publish,
    )

    from service.cli import register_cli
    from service.webhooks import blueprint

    app.register_blueprint(blueprint)
    register_cli(app)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    app.wsgi_app = RequestIds(app.wsgi_app)  # type: ignore[method-assign]
    if settings.trusted_proxy_hops:
        # Behind N trusted proxies the client address is the N-th from the right of X-Forwarded-For.
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    return app


def _http_error(error: HTTPException) -> ResponseReturnValue:
    name = (error.name or "error").lower().replace(" ", "_")
    return jsonify(error=name, detail=error.description), error.code or 500


def _unexpected_error(error: Exception) -> ResponseReturnValue:
    # Reaching this is a bug; the answer must still not be a bare 500 page, nor leak anything.
    import logging

    logging.getLogger(__name__).exception("unhandled error in request")
    response = jsonify(error="unavailable", detail="temporary failure, retry later")
    response.headers["Retry-After"] = "30"
    return response, 503
