"""The Celery reference: a task that only counts itself, on the service's broker and settings.

Run as `python -m bench.noop_worker CONCURRENCY`: the same Celery configuration
(queue.make_celery) and the same worker arguments (serving.worker_argv) as `webhook-app worker`.
"""

from __future__ import annotations

import sys
from functools import cache

import redis
from celery import Celery

from webhook_app.infra.queue import make_celery
from webhook_app.settings import Settings
from webhook_app.tools.serving import worker_argv

NOOP = "bench.noop"


def create_app(settings: Settings) -> Celery:
    app = make_celery(settings)

    @cache
    def counter() -> redis.Redis:
        return redis.Redis.from_url(settings.broker_url)

    @app.task(name=NOOP)
    def noop(key: str) -> None:
        counter().incr(key)

    return app


if __name__ == "__main__":
    create_app(Settings.from_env()).worker_main(worker_argv(int(sys.argv[1])))
