"""Submitting a job upstream exactly once.

A worker first claims the job in its own committed transaction (queued -> submitting,
submission `in_flight`), then calls the upstream, then records the answer. Whoever finds the
job already claimed does nothing, so a redelivered task cannot submit twice. A claim whose
answer never came is marked `unknown` and is left for its callback or an operator.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from webhook_app.reports import Report
from webhook_app.services.jobs import NOT_ENQUEUED, lock_job
from webhook_app.services.progress import Applied, apply_report, move
from webhook_app.states import JobStatus
from webhook_app.upstream import UpstreamError

IN_FLIGHT = "in_flight"
RETRY = "retry"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Claim:
    job_id: int
    public_id: str
    prompt: str
    aspect_ratio: str | None
    medium: str | None
    attempt: int


def claim(session: Session, job_id: int, *, now: datetime) -> Claim | None:
    """Take the job for one submission attempt, or None if it is not ours to submit."""
    job = lock_job(session, job_id=job_id)
    if job is None:
        return None
    if job.status == JobStatus.QUEUED:
        move(session, job, JobStatus.SUBMITTING, "submit", now)
        if job.last_error and job.last_error.get("kind") == NOT_ENQUEUED:
            job.last_error = None
    elif not (job.status == JobStatus.SUBMITTING and job.submission == RETRY):
        return None
    job.submission = IN_FLIGHT
    job.attempts += 1
    job.updated_at = now
    return Claim(job.id, job.public_id, job.prompt, job.aspect_ratio, job.medium, job.attempts)


def accept(
    session: Session, job_id: int, report: Report, *, now: datetime, recheck_after: timedelta
) -> Applied | None:
    """Record the generation the upstream accepted."""
    job = lock_job(session, job_id=job_id)
    if job is None:
        return None
    applied = apply_report(
        session, job, report, source="submit", now=now, recheck_after=recheck_after
    )
    job.submission = None
    job.submitted_at = job.submitted_at or now
    job.last_error = None
    return applied


def reject(session: Session, job_id: int, error: UpstreamError, *, now: datetime) -> None:
    """The upstream refused the request: the job fails, nothing is retried."""
    job = lock_job(session, job_id=job_id)
    if job is None:
        return
    job.last_error = error.as_record()
    job.submission = None
    move(session, job, JobStatus.FAILED, "submit", now, {"error": error.kind})


def defer(session: Session, job_id: int, error: UpstreamError, *, now: datetime) -> None:
    """Nothing was done upstream: the job may be claimed again by a retry."""
    job = lock_job(session, job_id=job_id)
    if job is None or job.submission != IN_FLIGHT:
        return
    job.last_error = error.as_record()
    job.submission = RETRY
    job.updated_at = now


def mark_unknown(session: Session, job_id: int, error: UpstreamError, *, now: datetime) -> None:
    """The request may have been carried out: never resend it blindly."""
    job = lock_job(session, job_id=job_id)
    if job is None or job.status != JobStatus.SUBMITTING:
        return
    job.last_error = error.as_record()
    job.submission = UNKNOWN
    job.updated_at = now
