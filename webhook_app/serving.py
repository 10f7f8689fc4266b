"""The command lines of the web and worker processes, shared by the CLI and the benchmark kit."""

from __future__ import annotations

import os
import sys

APP = "webhook_app.app:create_app()"


def gunicorn_argv(bind: str, workers: int, app: str = APP) -> list[str]:
    """gunicorn as `webhook-app serve` runs it (threads from $WEB_THREADS, else 4)."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        bind,
        "--workers",
        str(workers),
        # Threads let one process hold slow clients without blocking the callback receiver.
        "--worker-class",
        "gthread",
        "--threads",
        os.environ.get("WEB_THREADS", "4"),
        "--graceful-timeout",
        "20",
        "--timeout",
        "60",
        "--access-logfile",
        "-",
        "--config",
        "python:webhook_app.gunicorn_config",
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
