"""Celery tasks: a few lines each, rebuilding arguments and calling the plain services."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

from celery import Task, shared_task
from kombu.exceptions import OperationalError
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from webhook_app.depositphotos.client import (
    AuthenticationError,
    CredentialsRefused,
    NotFound,
    OutcomeUnknown,
    Throttled,
    TransientError,
    UpstreamError,
    ValidationError,
)
from webhook_app.depositphotos.kinds import image_generation as kind
from webhook_app.infra import metrics
from webhook_app.infra.callback_tokens import callback_token
from webhook_app.infra.queue import (
    ARCHIVE_ITEMS,
    CREATE_JOB,
    DELIVER_NOTIFICATION,
    ENRICH_JOB,
    FOLLOW_UP,
    JOB_FINISHED,
    PROBE_UPSTREAM,
    PRUNE,
    RECONCILE,
    REFRESH_JOB,
    SUBMIT_JOB,
)
from webhook_app.models import Job
from webhook_app.services import (
    archive,
    budgets,
    jobs,
    media,
    notifications,
    retention,
    submission,
    upstream_state,
)
from webhook_app.services.applying import apply_pending
from webhook_app.services.progress import apply_report
from webhook_app.services.reconcile import Schedule, plan_reconciliation
from workers.context import WorkerContext, context

log = logging.getLogger(__name__)


DATABASE_ERRORS = (DBAPIError, PoolTimeout)
# Refusals that leave nothing done upstream and are worth asking again later.
RETRY_LATER = (TransientError, OutcomeUnknown, AuthenticationError, CredentialsRefused, Throttled)
# A reserved slot this close is waited for in the task; a later one by retrying the task.
INLINE_PACE_WAIT = 1.0
# How many waiting jobs are sent again at once when the credentials are accepted again
# (reconciliation sends the rest).
RESUME_BATCH = 10_000


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


def retry_later(task: Task, error: UpstreamError) -> Exception:
    """The task again: at the pace's next free slot when throttled (which never uses up its
    retries: nothing was sent), else with backoff."""
    if isinstance(error, Throttled):
        return task.retry(countdown=error.retry_after, max_retries=None, exc=error)
    return task.retry(countdown=backoff(task.request.retries), exc=error)


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
            budgets=budgets.budgets_for(ctx.settings.daily_generation_budget),
        )
        return job.public_id


@shared_task(name=SUBMIT_JOB, bind=True, base=DatabaseRetryingTask, max_retries=None)
def submit_job(self: Task, job_id: int, failures: int = 0, paced: bool = False) -> None:
    """Claim, call imageGenerator.generate once, record the answer.

    `failures` counts passing refusals so far; `paced` says a slot in the shared pace was
    reserved for this run.
    """
    ctx = context()
    with ctx.db.read() as session:
        claimable, pause = submission.claimable(session, job_id)
    if not claimable:
        return  # another task took it: no slot of the pace is spent on it
    if pause is not None:
        persist(
            partial(
                submission.wait_for_credentials,
                job_id=job_id,
                pause_reason=pause.reason,
                now=ctx.now(),
            )
        )
        return
    if not paced or ctx.pacer.slowed_for() > 0:
        wait = ctx.pacer.reserve(math.inf)
        if wait > INLINE_PACE_WAIT:
            # Come back at the reserved slot; the job is not claimed meanwhile.
            slot = ctx.now() + timedelta(seconds=wait)
            persist(partial(submission.scheduled, job_id=job_id, at=slot))
            raise self.retry(
                args=[job_id], kwargs={"failures": failures, "paced": True}, countdown=wait
            )
        time.sleep(wait)
    try:
        claim = submission.take(
            ctx.db, job_id, now=ctx.now(), max_in_flight=ctx.settings.upstream_max_in_flight
        )
    except submission.InFlightLimit:
        countdown = random.uniform(1.0, 3.0)
        raise self.retry(
            args=[job_id], kwargs={"failures": failures}, countdown=countdown
        ) from None
    if claim is None:
        return
    callback_url = (
        f"{ctx.settings.public_base_url}/callbacks/{claim.public_id}/"
        f"{callback_token(ctx.settings.callback_secrets[0], claim.public_id)}"
    )
    try:
        with ctx.client.prepaid():
            report = kind.submit(
                ctx.client,
                prompt=claim.prompt,
                callback_url=callback_url,
                aspect_ratio=claim.aspect_ratio,
                medium=claim.medium,
            )
    except CredentialsRefused as exc:
        pause_submissions(job_id, exc)
        return
    except (ValidationError, NotFound) as exc:
        persist(partial(submission.reject, job_id=job_id, error=exc, now=ctx.now()))
        return
    except Throttled as exc:
        # Nothing was sent (a login found no room in the pace): not a failure of the job.
        persist(partial(submission.defer, job_id=job_id, error=exc, now=ctx.now()))
        kwargs = {"failures": failures}
        raise self.retry(args=[job_id], kwargs=kwargs, countdown=exc.retry_after) from None
    except (TransientError, AuthenticationError) as exc:
        # A session refused again right after a new login is passing too: nothing was done.
        if failures >= ctx.settings.submit_max_retries:
            persist(partial(submission.reject, job_id=job_id, error=exc, now=ctx.now()))
            return
        persist(partial(submission.defer, job_id=job_id, error=exc, now=ctx.now()))
        kwargs = {"failures": failures + 1}
        raise self.retry(args=[job_id], kwargs=kwargs, countdown=backoff(failures)) from None
    except UpstreamError as exc:
        persist(partial(submission.mark_unknown, job_id=job_id, error=exc, now=ctx.now()))
        log.warning("job %s: submission outcome unknown (%s)", claim.public_id, exc.kind)
        return
    persist(
        lambda session: submission.accept(
            session, job_id, report, now=ctx.now(), recheck_after=ctx.settings.recheck_after
        )
    )


def pause_submissions(job_id: int, error: CredentialsRefused) -> None:
    """The credentials are refused: pause every submission, and this job waits with them."""
    ctx = context()
    reason = {key: value for key, value in error.as_record().items() if key != "at"}
    paused = False

    def write(session: Session) -> None:
        nonlocal paused
        now = ctx.now()
        paused = upstream_state.pause(
            session, reason, now=now, first_probe=ctx.settings.credentials_probe_interval
        )
        submission.wait_for_credentials(session, job_id, reason, now=now)

    persist(write)
    if paused:
        # One line and one count per change of state, however many jobs meet the refusal.
        log.warning(
            "upstream refuses the credentials (%s): submissions paused until a probe succeeds",
            error.exception or error.kind,
        )
        metrics.UPSTREAM_PAUSES.labels(state="paused").inc()
        ctx.enqueuer.send_later(PROBE_UPSTREAM, ctx.settings.credentials_probe_interval)


@shared_task(name=PROBE_UPSTREAM, base=DatabaseRetryingTask)
def probe_upstream() -> str:
    """While submissions are paused: one worker logs in; accepted, every waiting job goes."""
    ctx = context()
    with ctx.db.transaction() as session:
        if not upstream_state.take_probe(session, now=ctx.now()):
            return "not_due"
    try:
        ctx.client.login()
    except UpstreamError as exc:
        with ctx.db.transaction() as session:
            next_at = upstream_state.probe_failed(
                session,
                now=ctx.now(),
                base=ctx.settings.credentials_probe_interval,
                cap=ctx.settings.credentials_probe_max_interval,
            )
        log.debug("upstream probe refused (%s); next at %s", exc.kind, next_at)
        if next_at is not None:
            ctx.enqueuer.send_later(PROBE_UPSTREAM, (next_at - ctx.now()).total_seconds())
        return "refused"
    with ctx.db.transaction() as session:
        resumed = upstream_state.resume(session)
        waiting = submission.queued_jobs(session, limit=RESUME_BATCH) if resumed else []
    if resumed:
        log.warning("upstream accepts the credentials again: %d waiting jobs resume", len(waiting))
        metrics.UPSTREAM_PAUSES.labels(state="resumed").inc()
        for waiting_id in waiting:
            ctx.enqueuer.send(SUBMIT_JOB, waiting_id)
    return "accepted"


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
    except RETRY_LATER as exc:
        raise retry_later(self, exc) from None

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
def enrich_job(self: Task, *jobs: Any) -> None:
    """Record width, height and type of each item of some completed jobs. Each argument is a
    job id and its items' uuids; a message of an earlier release has job ids alone, whose
    items are read, as they are on a retry (some may be known by then)."""
    ctx = context()
    listed = [(int(job[0]), [str(u) for u in job[1]]) for job in jobs if not isinstance(job, int)]
    unlisted = [int(job) for job in jobs if isinstance(job, int)]
    if self.request.retries:
        unlisted, listed = unlisted + [job_id for job_id, _ in listed], []
    pending = [(job_id, item_uuid) for job_id, uuids in listed for item_uuid in uuids]
    if unlisted:
        pending += media.unknown_items(ctx.db, unlisted)
    found: list[media.Learned] = []
    try:
        for job_id, item_uuid in pending:
            found.append(media.Learned(job_id, item_uuid, *kind.media_data(ctx.client, item_uuid)))
    except (*RETRY_LATER, ValidationError, NotFound) as exc:
        # Media data may lag behind completion: a validation answer is retried too.
        raise retry_later(self, exc) from None
    finally:
        # What was learned is kept, even when the rest must wait: one statement for all.
        media.record(ctx.db, found)


@shared_task(name=RECONCILE, base=DatabaseRetryingTask, max_retries=0)
def reconcile() -> dict[str, int]:
    """Apply deliveries no applier took, time out, poll and resubmit what needs it, resend
    due follow-ups; run by beat."""
    ctx = context()
    swept = sweep_deliveries(ctx)
    with ctx.db.transaction() as session:
        plan = plan_reconciliation(
            session, now=ctx.now(), schedule=Schedule.from_settings(ctx.settings)
        )
        pause = upstream_state.current_pause(session)
    if pause is not None:
        # Waiting jobs go when a probe is accepted; a probe whose task was lost is sent again.
        plan.submit = []
        if pause.next_probe_at is not None and pause.next_probe_at <= ctx.now():
            ctx.enqueuer.send(PROBE_UPSTREAM)
    for job_id in plan.submit:
        ctx.enqueuer.send(SUBMIT_JOB, job_id)
    for job_id in plan.poll:
        ctx.enqueuer.send(REFRESH_JOB, job_id)
    summary = {
        "polled": len(plan.poll),
        "resubmitted": len(plan.submit),
        "timed_out": plan.timed_out,
        "unknown": plan.unknown,
        "deliveries_swept": swept,
        **resend_follow_ups(),
    }
    for action, count in summary.items():
        if count:
            metrics.RECONCILE.labels(action=action).inc(count)
    if any(summary.values()):
        log.info("reconciled: %s", summary)
    return summary


def sweep_deliveries(ctx: WorkerContext, max_batches: int = 20) -> int:
    """Apply the deliveries stored long ago and still pending (their applier died, or no
    worker applies): nothing stored is left unapplied."""
    before = ctx.now() - timedelta(seconds=ctx.settings.apply_sweep_after)
    swept = 0
    for _ in range(max_batches):
        outcomes = apply_pending(
            ctx.db,
            limit=ctx.settings.apply_batch_size,
            recheck_after=ctx.settings.recheck_after,
            received_before=before,
        )
        swept += sum(outcomes.values())
        if sum(outcomes.values()) < ctx.settings.apply_batch_size:
            break
    return swept


@shared_task(name=PRUNE, base=DatabaseRetryingTask, max_retries=0)
def prune(max_batches: int = 50) -> int:
    """Drop the deliveries and events of jobs that ended RETENTION_DAYS ago; run by beat."""
    ctx = context()
    keep = timedelta(days=ctx.settings.retention_days)
    pruned = 0
    for _ in range(max_batches):  # bounded, so one run never holds the worker for long
        with ctx.db.transaction() as session:
            done = retention.prune_batch(session, now=ctx.now(), retention=keep)
        pruned += done
        if not done:
            break
    if pruned:
        log.info("pruned the deliveries and events of %d finished jobs", pruned)
    return pruned


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
def job_finished(self: Task, *finished: Any) -> None:
    """Count each finished job's duration, and hand it to ON_JOB_DONE_TASK when one is
    configured. Each argument is a job id, the status it reached and its duration in seconds;
    messages of earlier releases have no duration (read from the job then), and the earliest
    are one job id and its status."""
    if finished and isinstance(finished[0], int):
        finished = (finished,)
    statuses = {int(part[0]): str(part[1]) for part in finished}
    seconds = {
        int(part[0]): float(part[2]) for part in finished if len(part) > 2 and part[2] is not None
    }
    ctx = context()
    hook = ctx.settings.on_job_done_task
    unknown = [job_id for job_id in statuses if job_id not in seconds]
    summaries = []
    if hook:  # only a hook is told the items
        with ctx.db.read() as session:
            query = select(Job).where(Job.id.in_(statuses)).order_by(Job.id)
            for job in session.scalars(query):
                base_url = ctx.settings.public_base_url
                summaries.append(notifications.job_summary(job, statuses[job.id], base_url))
                if job.id in unknown and job.finished_at is not None:
                    seconds[job.id] = (job.finished_at - job.created_at).total_seconds()
    elif unknown:
        with ctx.db.read() as session:
            times = select(Job.id, Job.created_at, Job.finished_at).where(Job.id.in_(unknown))
            for job_id, created_at, finished_at in session.execute(times):
                if finished_at is not None:
                    seconds[job_id] = (finished_at - created_at).total_seconds()
    for summary in summaries:
        try:
            ctx.enqueuer.send_to(
                ctx.settings.on_job_done_queue,
                str(hook),  # there are summaries only when there is a hook
                job_id=summary["id"],
                status=summary["status"],
                items=summary["items"],
            )
        except OperationalError as exc:
            raise self.retry(countdown=backoff(self.request.retries), exc=exc) from None
        metrics.HOOKS.inc()
    for job_id in sorted(seconds):
        metrics.JOB_SECONDS.labels(status=statuses[job_id]).observe(seconds[job_id])


@shared_task(name=FOLLOW_UP, bind=True)
def follow_up(self: Task, *parts: Any) -> None:
    """Several follow-up tasks in one message (see `after_commit`): each part is run here as
    its task, in the order asked. A part that fails is sent as its own task, which retries
    it on its own schedule; the others are not repeated."""
    for name, args in parts:
        try:
            self.app.tasks[name](*args)
        except Exception as exc:
            log.warning("%s failed in a follow-up (%s): sent on its own", name, type(exc).__name__)
            wait = exc.retry_after if isinstance(exc, Throttled) else backoff(0)
            context().enqueuer.send_later(name, wait, *args)


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
