"""The worker's Celery app: the shared configuration plus this package's tasks."""

from __future__ import annotations

from celery import Celery

import workers.applier
import workers.heartbeat
import workers.observability  # noqa: F401 - connects the logging and task signals
from webhook_app.extensions import settle
from webhook_app.infra.queue import make_celery
from webhook_app.settings import Settings


def create_worker_app(settings: Settings | None = None) -> Celery:
    # Settled before the pool forks, so the worker's own log lines are redacted too, and
    # the pool children, the heartbeat and the logging set-up all use these settings.
    settings = settle(settings)
    app = make_celery(settings)
    app.conf.include = ["workers.tasks"]
    app.set_current()
    app.set_default()
    return app
