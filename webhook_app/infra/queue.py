"""The Celery application both sides share, the task names, and enqueueing after commit."""

from __future__ import annotations

import logging
import ssl
import time
from datetime import timedelta
from typing import Any

from celery import Celery
from kombu.utils.url import url_to_parts

from webhook_app.infra import broker
from webhook_app.infra.logs import current_request_id
from webhook_app.settings import Settings

log = logging.getLogger(__name__)

# The public contract: other services enqueue this with send_task(CREATE_JOB, kwargs={...}).
CREATE_JOB = "webhook_app.create_job"
SUBMIT_JOB = "webhook_app.submit_job"
REFRESH_JOB = "webhook_app.refresh_job"
ENRICH_JOB = "webhook_app.enrich_job"
RECONCILE = "webhook_app.reconcile"
ARCHIVE_ITEMS = "webhook_app.archive_items"
JOB_FINISHED = "webhook_app.job_finished"
# Several follow-up tasks' arguments in one message (see infra.db.after_commit).
FOLLOW_UP = "webhook_app.follow_up"
DELIVER_NOTIFICATION = "webhook_app.deliver_notification"
PRUNE = "webhook_app.prune"
# How often beat prunes what RETENTION_DAYS lets go (when it is set).
PRUNE_INTERVAL = 3600.0
PROBE_UPSTREAM = "webhook_app.probe_upstream"

# Longest task: a generate call with its timeout, plus a margin.
LONGEST_TASK = timedelta(minutes=10)


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured for a PaaS: late acks where safe, no hoarding, bounded publish."""
    if settings.broker_url.startswith("sqla+"):
        broker.use_fast_polling()
        broker.create_directory(settings.broker_url)
    app = Celery("webhook_app", broker=settings.broker_url, set_as_current=False)
    transport_options: dict[str, Any]
    if settings.broker_url.startswith("sqla+"):
        # The server-less broker passes its options to create_engine: wait for SQLite's
        # write lock instead of failing when several processes poll at once.
        transport_options = {"connect_args": {"timeout": 30}}
    else:
        # Redis redelivers an unacknowledged message after this long; it must exceed the
        # longest task, or a slow task would run twice.
        transport_options = {"visibility_timeout": int(LONGEST_TASK.total_seconds() * 2)}
    app.conf.update(
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=int(LONGEST_TASK.total_seconds()),
        task_soft_time_limit=int(LONGEST_TASK.total_seconds()) - 30,
        broker_transport_options=transport_options,
        broker_use_ssl=broker_tls(settings),
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_default_queue=settings.queue,
        beat_schedule=beat_schedule(settings),
    )
    return app


def beat_schedule(settings: Settings) -> dict[str, Any]:
    schedule: dict[str, Any] = {
        "reconcile": {"task": RECONCILE, "schedule": settings.reconcile_interval},
    }
    if settings.retention_days:
        schedule["prune"] = {"task": PRUNE, "schedule": PRUNE_INTERVAL}
    return schedule


def broker_tls(settings: Settings) -> dict[str, Any] | None:
    """The TLS options of a rediss:// or amqps:// broker; None for the others."""
    cert_reqs = ssl.CERT_REQUIRED if settings.broker_tls_verify else ssl.CERT_NONE
    if settings.broker_url.startswith("rediss://"):
        options: dict[str, Any] = {"ssl_cert_reqs": cert_reqs}
        if settings.broker_tls_ca_certs:
            options["ssl_ca_certs"] = settings.broker_tls_ca_certs
        return options
    if settings.broker_url.startswith("amqps://"):
        options = {"cert_reqs": cert_reqs}
        if settings.broker_tls_ca_certs:
            options["ca_certs"] = settings.broker_tls_ca_certs
        return options
    return None


def describe_broker(settings: Settings) -> str:
    """The broker as an operator may see it: transport, host and TLS, never credentials."""
    parts = url_to_parts(settings.broker_url)
    if settings.broker_url.startswith("sqla+"):
        return f"{parts.scheme} (server-less: {parts.path})"
    where = f"{parts.scheme}://{parts.hostname}"
    if parts.port:
        where += f":{parts.port}"
    if parts.path:
        where += f"/{parts.path.lstrip('/')}"
    if settings.broker_url.startswith(("rediss://", "amqps://")):
        checked = "verified" if settings.broker_tls_verify else "not verified"
        where += f" (TLS, certificate {checked})"
    return where


def task_headers() -> dict[str, Any]:
    """Carried by every message: the request that caused it, and when it was published."""
    return {"request_id": current_request_id(), "published_at": time.time()}


class Enqueuer:
    """Sends tasks by name; a broker failure is logged, since reconciliation recovers it."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    def send(self, name: str, *args: Any) -> bool:
        try:
            self._app.send_task(name, args=args, headers=task_headers())
        except Exception:
            log.exception("could not enqueue %s; reconciliation will pick it up", name)
            return False
        return True

    def send_later(self, name: str, countdown: float, *args: Any) -> bool:
        """Like `send`, to be run `countdown` seconds from now."""
        try:
            self._app.send_task(
                name, args=args, countdown=max(0.0, countdown), headers=task_headers()
            )
        except Exception:
            log.exception("could not enqueue %s; reconciliation will pick it up", name)
            return False
        return True

    def send_to(self, queue: str, name: str, **kwargs: Any) -> None:
        """Send a task to another service's queue, by name and keyword arguments."""
        self._app.send_task(name, kwargs=kwargs, queue=queue, headers=task_headers())

    def check(self) -> str:
        """ "ok", or why the broker cannot be reached."""
        try:
            with self._app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
        except Exception as exc:
            return f"unreachable: {type(exc).__name__}"
        return "ok"
