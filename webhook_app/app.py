"""The Flask application factory."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from webhook_app import extensions
from webhook_app.infra.logs import configure_logging
from webhook_app.infra.queue import Enqueuer, make_celery
from webhook_app.settings import Settings

log = logging.getLogger(__name__)


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def create_app(settings: Settings | None = None, *, enqueuer: Enqueuer | None = None) -> Flask:
    settings = extensions.settle(settings or Settings.from_env())
    configure_logging(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_callback_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if settings.trust_proxy_hops:
        # The client address is the one the trusted proxies saw, read from X-Forwarded-For.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trust_proxy_hops)  # type: ignore[method-assign]
    enqueuer = enqueuer or Enqueuer(make_celery(settings))
    extensions.init_app(app, extensions.build_services(settings, enqueuer=enqueuer))

    from webhook_app.web import (
        api,
        dashboard,
        health,
        images,
        notifications,
        observe,
        openapi,
        receiver,
        usage,
        waiting,
    )
    from webhook_app.web.headers import install_security_headers

    app.extensions["webhook_app.waiters"] = waiting.Waiters(settings.max_waiters)
    observe.init_app(app)
    app.register_blueprint(receiver.blueprint)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(usage.blueprint)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(images.blueprint)
    app.register_blueprint(notifications.blueprint)
    app.register_blueprint(openapi.blueprint)
    dashboard.init_app(app, settings)
    install_security_headers(app, https=settings.public_base_url.startswith("https://"))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        name = (exc.name or "error").lower().replace(" ", "_")
        return jsonify(error_body(name, exc.description or exc.name or "")), exc.code

    @app.errorhandler(DBAPIError)
    @app.errorhandler(PoolTimeout)
    def _database_down(exc: Exception) -> Any:
        # The sender should try again later; nothing was half-written (the transaction
        # was rolled back when the session closed).
        log.error("database unavailable: %s", type(exc).__name__)
        body = error_body("database_unavailable", "the database is unreachable; retry later")
        return jsonify(body), 503, {"Retry-After": "5"}

    return app
