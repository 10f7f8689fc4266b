"""Celery tasks: a few lines each, rebuilding arguments and calling the plain services."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from celery import Task, shared_task
from kombu.exceptions import OperationalError
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, lazyload

from webhook_app import metrics
from webhook_app.kinds import image_generation as kind
from webhook_app.models import Job, JobItem
from webhook_app.queue import (
    ARCHIVE_ITEMS,
    CREATE_JOB,
    DELIVER_NOTIFICATION,
    ENRICH_JOB,
    JOB_FINISHED,
    RECONCILE,
    REFRESH_JOB,
    SUBMIT_JOB,
)
from webhook_app.services import archive, changes, jobs, notifications, submission
from webhook_app.services.progress import apply_report
from webhook_app.services.reconcile import Schedule, plan_reconciliation
from webhook_app.tokens import callback_token
from webhook_app.upstream import (
    AuthenticationError,
    OutcomeUnknown,
    TransientError,
    UpstreamError,
    ValidationError,
)
from workers.context import context

log = logging.getLogger(__name__)


DATABASE_ERRORS = (DBAPIError, PoolTimeout)


class DatabaseRetryingTask(Task):
    """A task that is run again, later, when the database is away.

    Every task is safe to repeat: submissions are claimed before they are sent, and polls and
    merges are idempotent.
    """

    autoretry_for = DATABASE_ERRORS
    retry_backoff = 1
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = 12


def backoff(retries: int) -> float:
    """Exponential with full jitter, so retries from many jobs do not arrive together."""
    settings = context().settings
    base, cap = settings.retry_backoff_base, settings.retry_backoff_max
    return random.uniform(base, max(base, min(cap, base * 2**retries)))


def persist(write: Callable[[Session], object], attempts: int = 8) -> None:
    """Record what the upstream already did, riding out a short database outage.

    Retrying the whole task instead would find the job claimed and give up, leaving the
    answer unrecorded until its callback arrives.
    """
    for attempt in range(attempts):
        try:
            with context().db.transaction() as session:
                write(session)
            return
        except DATABASE_ERRORS:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


@shared_task(name=CREATE_JOB, bind=True, base=DatabaseRetryingTask)
def create_job(
    self: Task,
    prompt: str,
    aspect_ratio: str | None = None,
    medium: str | None = None,
    metadata: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> str:
    """The public task: create a job from another service's request, then submit it."""
    ctx = context()
    request = jobs.JobRequest.from_mapping(
        {
            key: value
            for key, value in {
                "prompt": prompt,
                "aspect_ratio": aspect_ratio,
                "medium": medium,
                "metadata": metadata,
            }.items()
            if value is not None
        }
    )
    with ctx.db.transaction() as session:
        job, _ = jobs.create_job(
            session,
            request,
            now=ctx.now(),
            deadline=ctx.settings.deadline,
            idempotency_key=idempotency_key,
            source="task",
        )
        return job.public_id


@shared_task(name=SUBMIT_JOB, bind=True, base=DatabaseRetryingTask, max_retries=None)
def submit_job(self: Task, job_id: int) -> None:
    """Claim, call imageGenerator.generate once, record the answer."""
    ctx = context()
    with ctx.db.transaction() as session:
        claim = submission.claim(session, job_id, now=ctx.now())
    if claim is None:
        return
    callback_url = (
        f"{ctx.settings.public_base_url}/callbacks/{claim.public_id}/"
        f"{callback_token(ctx.settings.callback_secrets[0], claim.public_id)}"
    )
    try:
        report = kind.submit(
            ctx.client,
            prompt=claim.prompt,
            callback_url=callback_url,
            aspect_ratio=claim.aspect_ratio,
            medium=claim.medium,
        )
    except (ValidationError, AuthenticationError) as exc:
        persist(partial(submission.reject, job_id=job_id, error=exc, now=ctx.now()))
        return
    except TransientError as exc:
        if self.request.retries >= ctx.settings.submit_max_retries:
            persist(partial(submission.reject, job_id=job_id, error=exc, now=ctx.now()))
            return
        persist(partial(submission.defer, job_id=job_id, error=exc, now=ctx.now()))
        raise self.retry(countdown=backoff(self.request.retries), exc=exc) from None
    except UpstreamError as exc:
        persist(partial(submission.mark_unknown, job_id=job_id, error=exc, now=ctx.now()))
        log.warning("job %s: submission outcome unknown (%s)", claim.public_id, exc.kind)
        return
    persist(
        lambda session: submission.accept(
            session, job_id, report, now=ctx.now(), recheck_after=ctx.settings.recheck_after
        )
    )


@shared_task(name=REFRESH_JOB, bind=True, base=DatabaseRetryingTask)
def refresh_job(self: Task, job_id: int, source: str = "poll") -> None:
    """Ask imageGenerator.get for the truth and apply it like a callback."""
    ctx = context()
    with ctx.db.transaction() as session:
        job = jobs.lock_job(session, job_id=job_id)
        reference = job.generation_uuid if job else None
    if reference is None:
        return
    try:
        report = kind.poll(ctx.client, reference)
    except (TransientError, OutcomeUnknown) as exc:
        raise self.retry(countdown=backoff(self.request.retries), exc=exc) from None

    def record(session: Session) -> None:
        job = jobs.lock_job(session, job_id=job_id)
        if job is not None:
            apply_report(
                session,
                job,
                report,
                source=source,
                now=ctx.now(),
                recheck_after=ctx.settings.recheck_after,
            )

    persist(record)


@shared_task(name=ENRICH_JOB, bind=True, base=DatabaseRetryingTask)
def enrich_job(self: Task, job_id: int) -> None:
    """Record width, height and type of each item of a completed job."""
    ctx = context()
    with ctx.db.read() as session:
        pending = session.execute(
            select(JobItem.id, JobItem.uuid).where(
                JobItem.job_id == job_id, JobItem.width.is_(None)
            )
        ).all()
    found: list[dict[str, Any]] = []
    try:
        for item_id, item_uuid in pending:
            width, height, media_type = kind.media_data(ctx.client, item_uuid)
            found.append(dict(id=item_id, width=width, height=height, media_type=media_type))
    except (TransientError, OutcomeUnknown, ValidationError) as exc:
        # Media data may lag behind completion: a validation answer is retried too.
        raise self.retry(countdown=backoff(self.request.retries), exc=exc) from None
    finally:
        # What was learned is kept, even when the rest must wait: one statement for all.
        if found:
            with ctx.db.transaction() as session:
                # A plain statement: record the change. The job's row first, as every writer
                # takes it before its items, so two writers never wait on each other in a ring.
                changes.touch(session, job_ids=[job_id])
                session.execute(update(JobItem), found)


@shared_task(name=RECONCILE, base=DatabaseRetryingTask, max_retries=0)
def reconcile() -> dict[str, int]:
    """Time out, poll and resubmit what needs it, resend due follow-ups; run by beat."""
    ctx = context()
    with ctx.db.transaction() as session:
        plan = plan_reconciliation(
            session, now=ctx.now(), schedule=Schedule.from_settings(ctx.settings)
        )
    for job_id in plan.submit:
        ctx.enqueuer.send(SUBMIT_JOB, job_id)
    for job_id in plan.poll:
        ctx.enqueuer.send(REFRESH_JOB, job_id)
    summary = {
        "polled": len(plan.poll),
        "resubmitted": len(plan.submit),
        "timed_out": plan.timed_out,
        "unknown": plan.unknown,
        **resend_follow_ups(),
    }
    for action, count in summary.items():
        if count:
            metrics.RECONCILE.labels(action=action).inc(count)
    if any(summary.values()):
        log.info("reconciled: %s", summary)
    return summary


@shared_task(name=ARCHIVE_ITEMS)
def archive_items(*item_uuids: str) -> list[str | None]:
    """One attempt at keeping our own copy of each item's image."""
    ctx = context()
    return archive.archive_items(
        ctx.db,
        ctx.storage,
        ctx.http,
        item_uuids,
        clock=ctx.now,
        max_bytes=ctx.settings.archive_max_bytes,
        timeout=ctx.settings.archive_timeout,
    )


@shared_task(name=DELIVER_NOTIFICATION)
def deliver_notification(public_id: str) -> str | None:
    """One signed POST of a completion notification to its subscriber."""
    ctx = context()
    return notifications.deliver(
        ctx.db,
        ctx.http,
        public_id,
        clock=ctx.now,
        base_url=ctx.settings.public_base_url,
        timeout=ctx.settings.notify_timeout,
    )


@shared_task(name=JOB_FINISHED, bind=True, max_retries=5)
def job_finished(self: Task, job_id: int, status: str) -> None:
    """Count the job's duration, and hand it to ON_JOB_DONE_TASK when one is configured."""
    ctx = context()
    hook = ctx.settings.on_job_done_task
    with ctx.db.read() as session:
        job = session.get(Job, job_id, options=[lazyload(Job.items)])
        if job is None:
            return
        summary = None
        if hook:  # only a hook is told the items: read them for it alone
            summary = notifications.job_summary(job, status, ctx.settings.public_base_url)
    if hook and summary is not None:
        try:
            ctx.enqueuer.send_to(
                ctx.settings.on_job_done_queue,
                hook,
                job_id=summary["id"],
                status=status,
                items=summary["items"],
            )
        except OperationalError as exc:
            raise self.retry(countdown=backoff(self.request.retries), exc=exc) from None
        metrics.HOOKS.inc()
    if job.finished_at is not None:
        seconds = (job.finished_at - job.created_at).total_seconds()
        metrics.JOB_SECONDS.labels(status=status).observe(seconds)


def resend_follow_ups() -> dict[str, int]:
    """Archive and notification attempts that are due: retries, and messages lost on the way."""
    ctx = context()
    with ctx.db.transaction() as session:
        items = archive.due_archives(session, now=ctx.now())
        messages = notifications.due_notifications(session, now=ctx.now())
    for start in range(0, len(items), 10):
        ctx.enqueuer.send(ARCHIVE_ITEMS, *items[start : start + 10])
    for public_id in messages:
        ctx.enqueuer.send(DELIVER_NOTIFICATION, public_id)
    return {"archives_resent": len(items), "notifications_resent": len(messages)}
