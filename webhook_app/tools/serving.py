"""The command lines of the web and worker processes, shared by the CLI and the benchmark kit."""

from __future__ import annotations

import sys

APP = "webhook_app.app:create_app()"


def gunicorn_argv(bind: str, workers: int, threads: int, app: str = APP) -> list[str]:
    """gunicorn as `webhook-app serve` runs it."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        bind,
        "--workers",
        str(workers),
        # Threads let one process hold slow clients and long-polls (?wait=, at most
        # MAX_WAITERS of them) without blocking the callback receiver.
        "--worker-class",
        "gthread",
        "--threads",
        str(threads),
        "--graceful-timeout",
        "20",
        "--timeout",
        "60",
        # No gunicorn access log: the app logs each request by route, since a callback's
        # path carries its token.
        "--config",
        "python:webhook_app.tools.gunicorn_config",
        app,
    ]


def worker_argv(concurrency: int) -> list[str]:
    """The arguments `webhook-app worker` hands to Celery's worker_main."""
    return [
        "worker",
        "--loglevel=INFO",
        f"--concurrency={concurrency}",
        # No broadcast features are used, and the server-less broker has none.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
