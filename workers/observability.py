"""Worker-side logging and metrics, wired through Celery's signals.

Each task runs with the request id of the HTTP request (or beat run) that caused it, read
from the message headers the Enqueuer sets, so its log lines and the tasks it sends carry it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import datetime
from typing import Any

from celery import Task
from celery.signals import setup_logging, task_postrun, task_prerun

from webhook_app.extensions import settle
from webhook_app.infra import logs, metrics

log = logging.getLogger("webhook_app.tasks")

_started: dict[str, float] = {}


@setup_logging.connect
def _configure_logging(**_: Any) -> None:
    # Connected, so Celery leaves logging to us: the same format as the web side.
    logs.configure_logging(settle())


def _header(task: Task, name: str) -> Any:
    headers = getattr(task.request, "headers", None) or {}
    return headers.get(name) or getattr(task.request, name, None)


def queue_lag(published_at: Any, eta: Any, now: float) -> float | None:
    """Seconds between when the task could first run and now; None when unknown."""
    try:
        ready = float(published_at)
    except (TypeError, ValueError):
        return None
    if eta:
        with contextlib.suppress(ValueError):
            ready = max(ready, datetime.fromisoformat(str(eta)).timestamp())
    return max(0.0, now - ready)


@task_prerun.connect
def _task_started(task_id: str, task: Task, **_: Any) -> None:
    logs.clear()
    logs.bind(
        request_id=_header(task, "request_id") or logs.new_request_id(),
        task=task.name,
        task_id=task_id,
    )
    lag = queue_lag(_header(task, "published_at"), task.request.eta, time.time())
    if lag is not None:
        metrics.QUEUE_LAG.labels(task=task.name).observe(lag)
    _started[task_id] = time.perf_counter()


@task_postrun.connect
def _task_finished(task_id: str, task: Task, state: str | None = None, **_: Any) -> None:
    started = _started.pop(task_id, None)
    outcome = (state or "unknown").lower()
    metrics.TASKS.labels(task=task.name, outcome=outcome).inc()
    extra: dict[str, Any] = {"outcome": outcome}
    if started is not None:
        extra["duration_ms"] = round((time.perf_counter() - started) * 1000)
    log.info("task finished", extra=extra)
    logs.clear()
