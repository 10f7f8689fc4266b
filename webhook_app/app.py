"""The Flask application factory."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from webhook_app import extensions
from webhook_app.infra.logs import configure_logging
from webhook_app.infra.queue import Enqueuer, make_celery
from webhook_app.settings import Settings


def create_app(settings: Settings | None = None, *, enqueuer: Enqueuer | None = None) -> Flask:
    settings = extensions.settle(settings or Settings.from_env())
    configure_logging(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_callback_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    enqueuer = enqueuer or Enqueuer(make_celery(settings))
    # One pooled connection per thread that may hold one: a pool smaller than that opens and
    # closes a connection for every request past its size when the threads are all busy.
    threads = settings.web_threads
    shared = extensions.build_services(settings, enqueuer=enqueuer, pool_size=threads)
    extensions.init_app(app, shared)

    from webhook_app.web import (
        api,
        dashboard,
        errors,
        health,
        images,
        notifications,
        observe,
        openapi,
        receiver,
        usage,
        waiting,
    )
    from webhook_app.web.answers import AnswerCache
    from webhook_app.web.headers import install_security_headers

    app.extensions["webhook_app.waiters"] = waiting.Waiters(settings.max_waiters)
    app.extensions["webhook_app.answers"] = AnswerCache(settings.answer_cache_size)
    observe.init_app(app)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(usage.blueprint)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(images.blueprint)
    app.register_blueprint(notifications.blueprint)
    app.register_blueprint(openapi.blueprint)
    dashboard.init_app(app, settings)
    install_security_headers(app, https=settings.public_base_url.startswith("https://"))
    errors.init_app(app)
    # Callbacks are answered in front of the app (web.receiver says why).
    app.wsgi_app = receiver.Receiver(app.wsgi_app, shared)  # type: ignore[method-assign]
    if settings.trust_proxy_hops:
        # The client address is the one the trusted proxies saw, read from X-Forwarded-For.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trust_proxy_hops)  # type: ignore[method-assign]
    return app
