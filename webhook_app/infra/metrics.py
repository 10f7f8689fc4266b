"""Prometheus metrics for web and workers.

With PROMETHEUS_MULTIPROC_DIR set (the `serve`, `worker`, `beat` and `run` commands set it
when it is not), every process (gunicorn workers, Celery pool children) writes its counts
to files there, and a scrape adds them up. `/metrics` on the web side reads that directory,
so a worker on the same machine sharing it is counted there too; a worker elsewhere serves
its own directory on WORKER_METRICS_PORT. Gauges of jobs, archives and notifications by
state are counted in the database at scrape time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select

from webhook_app.infra.db import Database
from webhook_app.models import (
    GenerationUsage,
    ItemArchive,
    Job,
    Notification,
    UpstreamState,
    utcnow,
)
from webhook_app.states import JobStatus

log = logging.getLogger(__name__)

CALLBACKS = Counter(
    "webhook_app_callbacks_total", "Callback deliveries received, by outcome", ["outcome"]
)
CALLBACK_SECONDS = Histogram(
    "webhook_app_callback_duration_seconds", "Time to authenticate and keep a callback"
)
DELIVERIES_APPLIED = Counter(
    "webhook_app_deliveries_applied_total",
    "Stored deliveries merged into jobs, by outcome",
    ["outcome"],
)
UPSTREAM_CALLS = Counter(
    "webhook_app_upstream_calls_total",
    "Calls to the Depositphotos API, by command and outcome",
    ["command", "outcome"],
)
UPSTREAM_SECONDS = Histogram(
    "webhook_app_upstream_call_duration_seconds",
    "Duration of calls to the Depositphotos API",
    ["command"],
)
JOB_SECONDS = Histogram(
    "webhook_app_job_duration_seconds",
    "From a job's creation to its terminal status",
    ["status"],
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
)
RECONCILE = Counter(
    "webhook_app_reconcile_actions_total",
    "What reconciliation did: polled, resubmitted, timed_out, unknown",
    ["action"],
)
QUEUE_LAG = Histogram(
    "webhook_app_task_queue_lag_seconds",
    "From a task's publication (or its ETA) to its start on a worker",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
TASKS = Counter("webhook_app_tasks_total", "Tasks run, by name and outcome", ["task", "outcome"])
ARCHIVES = Counter(
    "webhook_app_archive_attempts_total",
    "Attempts at archiving an image: archived, retry, failed",
    ["outcome"],
)
NOTIFICATIONS = Counter(
    "webhook_app_notification_attempts_total",
    "Attempts at delivering a notification: delivered, retry, failed",
    ["outcome"],
)
UPSTREAM_PAUSES = Counter(
    "webhook_app_upstream_pause_changes_total",
    "Submissions paused (credentials refused) and resumed (accepted again)",
    ["state"],
)
HOOKS = Counter("webhook_app_job_done_hooks_total", "ON_JOB_DONE_TASK messages sent")


class DatabaseCollector:
    """Jobs, archives and notifications by state, counted when scraped."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def collect(self) -> Iterator[Metric]:
        try:
            with self._db.sessions() as session:
                jobs = dict(
                    session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
                )
                archives = dict(
                    session.execute(
                        select(ItemArchive.state, func.count()).group_by(ItemArchive.state)
                    ).all()
                )
                notifications = dict(
                    session.execute(
                        select(Notification.state, func.count()).group_by(Notification.state)
                    ).all()
                )
                paused = session.scalar(
                    select(func.count())
                    .select_from(UpstreamState)
                    .where(UpstreamState.paused_since.is_not(None))
                )
                generations = session.scalar(
                    select(GenerationUsage.used).where(
                        GenerationUsage.budget == "deployment",
                        GenerationUsage.day == utcnow().strftime("%Y-%m-%d"),
                    )
                )
        except Exception as exc:  # a scrape must not fail because the database is away
            log.warning("metrics: database counts unavailable: %s", type(exc).__name__)
            return
        gauge = GaugeMetricFamily("webhook_app_jobs", "Jobs by status", labels=["status"])
        for status in JobStatus:
            gauge.add_metric([status.value], jobs.get(status.value, 0))
        yield gauge
        yield GaugeMetricFamily(
            "webhook_app_upstream_paused",
            "1 while submissions are paused because the upstream refuses the credentials",
            value=1 if paused else 0,
        )
        yield GaugeMetricFamily(
            "webhook_app_generations_today",
            "Generations counted today (UTC) against the deployment's daily budget",
            value=generations or 0,
        )
        for name, text, counts in (
            ("webhook_app_item_archives", "Item image archives by state", archives),
            ("webhook_app_notifications", "Completion notifications by state", notifications),
        ):
            family = GaugeMetricFamily(name, text, labels=["state"])
            for state, count in sorted(counts.items()):
                family.add_metric([state], count)
            yield family


def _process_registry() -> CollectorRegistry:
    """Every process's counts: the multiprocess directory's sum, or this process alone."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def render(db: Database | None = None) -> tuple[bytes, str]:
    """The exposition text for a scrape, and its content type."""
    output = generate_latest(_process_registry())
    if db is not None:
        database = CollectorRegistry(auto_describe=False)
        database.register(DatabaseCollector(db))
        output += generate_latest(database)
    return output, CONTENT_TYPE_LATEST


def serve_worker_metrics(port: int) -> None:
    """Serve this machine's worker counts on their own port (a thread of the calling process)."""
    start_http_server(port, registry=_process_registry())
