"""Celery workers: the app (celery_app), the tasks, and what each worker process builds once.

`celery -A workers inspect ping` (or `flower`, `purge`, ...) finds the worker app here: it is
built from the environment when Celery first asks for `workers.app`, never at import.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from workers.celery_app import create_worker_app

        app = create_worker_app()
        globals()["app"] = app  # later look-ups find the same app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
