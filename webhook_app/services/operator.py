"""What an operator may do to a job: poll it now, retry it, cancel it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from webhook_app.infra.db import after_commit
from webhook_app.infra.queue import REFRESH_JOB
from webhook_app.models import Job
from webhook_app.services.budgets import Budget
from webhook_app.services.jobs import JobRequest, create_job, lock_job
from webhook_app.services.progress import move, record_event
from webhook_app.services.submission import RETRY, UNKNOWN
from webhook_app.states import JobStatus

SOURCE = "operator"
RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.TIMED_OUT})


class NotAllowed(ValueError):
    """The action does not apply to the job as it stands; the message says why."""


def _note(session: Session, job: Job, now: datetime, detail: dict[str, Any]) -> None:
    # An action that moves nothing is still part of the job's story.
    record_event(session, job, now, SOURCE, to_status=job.status, detail=detail)


def refresh(session: Session, public_id: str, *, now: datetime) -> Job:
    """Poll the upstream for this job now; what it answers is recorded as `operator`."""
    job = lock_job(session, public_id=public_id)
    if job is None:
        raise LookupError(public_id)
    if job.generation_uuid is None:
        raise NotAllowed("the job has no upstream generation to ask about yet")
    _note(session, job, now, {"action": "refresh"})
    after_commit(session, REFRESH_JOB, job.id, SOURCE)
    return job


def retry(
    session: Session,
    public_id: str,
    *,
    now: datetime,
    deadline: timedelta,
    budgets: Sequence[Budget] = (),
) -> Job:
    """Submit the same request again as a new job linked to this one (a new generation, so
    it counts against the budgets)."""
    job = lock_job(session, public_id=public_id)
    if job is None:
        raise LookupError(public_id)
    if job.status not in RETRYABLE:
        raise NotAllowed(f"only failed or timed-out jobs can be retried, this one is {job.status}")
    request = JobRequest(job.prompt, job.aspect_ratio, job.medium, job.meta)
    new_job, _ = create_job(
        session, request, now=now, deadline=deadline, source=SOURCE, budgets=budgets
    )
    new_job.retry_of_id = job.id
    _note(session, job, now, {"action": "retry", "retried_as": new_job.public_id})
    return new_job


def cancel(session: Session, public_id: str, *, now: datetime, reason: str | None = None) -> Job:
    """Give up on a job that the upstream has not accepted: it fails, nothing is sent."""
    job = lock_job(session, public_id=public_id)
    if job is None:
        raise LookupError(public_id)
    cancellable = job.status == JobStatus.QUEUED or (
        job.status == JobStatus.SUBMITTING and job.submission in (RETRY, UNKNOWN)
    )
    if not cancellable:
        raise NotAllowed(f"only jobs not yet submitted can be cancelled, this one is {job.status}")
    job.last_error = {
        "kind": "cancelled",
        "message": (reason or "cancelled by an operator")[:500],
        "at": now.isoformat(),
    }
    job.submission = None
    move(session, job, JobStatus.FAILED, SOURCE, now, {"action": "cancel"})
    return job
