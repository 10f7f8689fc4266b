"""Submitting a job upstream exactly once.

A worker first claims the job in its own committed transaction (queued -> submitting,
submission `in_flight`), then calls the upstream, then records the answer. Whoever finds the
job already claimed does nothing, so a redelivered task cannot submit twice. A claim whose
answer never came is marked `unknown` and is left for its callback or an operator.

While the upstream refuses the credentials, jobs wait `queued` and say why; a claim whose
call was refused for that reason is given back (nothing was done upstream).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Table,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, lazyload
from sqlalchemy.sql import Select

from webhook_app import changes
from webhook_app.depositphotos.client import UpstreamError
from webhook_app.depositphotos.reports import Report
from webhook_app.infra import logs
from webhook_app.infra.db import Database
from webhook_app.models import Event, Job, JobItem, Subscription, UpstreamState
from webhook_app.services import notifications
from webhook_app.services.jobs import NOT_ENQUEUED, lock_job
from webhook_app.services.progress import Applied, apply_report, move, record_event
from webhook_app.services.upstream_state import (
    NAME,
    PAUSE_COLUMNS,
    Pause,
    ensure_row,
    pause_of,
)
from webhook_app.states import JobStatus

CALL_IN_FLIGHT = "in_flight"
RETRY = "retry"
UNKNOWN = "unknown"
CREDENTIALS_REFUSED = "credentials_refused"
# Generations the upstream is working on for us.
_UPSTREAM_BUSY = (JobStatus.SUBMITTING.value, JobStatus.SUBMITTED.value, JobStatus.PROCESSING.value)


class InFlightLimit(Exception):
    """UPSTREAM_MAX_IN_FLIGHT generations are under way: the job stays queued for now."""


def waiting_reason(pause_reason: dict[str, object], now: datetime) -> dict[str, object]:
    """What a job waiting for the credentials says in its last error."""
    return {
        "kind": CREDENTIALS_REFUSED,
        "code": pause_reason.get("code"),
        "exception": pause_reason.get("exception"),
        "message": "waiting: the upstream refuses the API key or the login; submissions resume "
        "by themselves once it accepts them again",
        "at": now.isoformat(),
    }


@dataclass(frozen=True)
class Claim:
    job_id: int
    public_id: str
    prompt: str
    aspect_ratio: str | None
    medium: str | None
    attempt: int


def claim(session: Session, job_id: int, *, now: datetime, max_in_flight: int = 0) -> Claim | None:
    """Take the job for one submission attempt, or None if it is not ours to submit.

    With `max_in_flight`, raises InFlightLimit while that many generations are under way.
    """
    if max_in_flight:
        # Claims take turns on the upstream's row, so the count cannot be overtaken.
        ensure_row(session)
        session.execute(
            select(UpstreamState.name).where(UpstreamState.name == NAME).with_for_update()
        )
        busy = session.scalar(
            select(func.count()).select_from(Job).where(Job.status.in_(_UPSTREAM_BUSY))
        )
        if (busy or 0) >= max_in_flight:
            raise InFlightLimit(busy)
    job = lock_job(session, job_id=job_id)
    if job is None:
        return None
    if job.status == JobStatus.QUEUED:
        move(session, job, JobStatus.SUBMITTING, "submit", now)
        if job.last_error and job.last_error.get("kind") == NOT_ENQUEUED:
            job.last_error = None
    elif not (job.status == JobStatus.SUBMITTING and job.submission == RETRY):
        return None
    job.submission = CALL_IN_FLIGHT
    job.attempts += 1
    job.updated_at = now
    return Claim(job.id, job.public_id, job.prompt, job.aspect_ratio, job.medium, job.attempts)


def take(db: Database, job_id: int, *, now: datetime, max_in_flight: int = 0) -> Claim | None:
    """`claim` in a committed transaction of its own: on PostgreSQL one statement."""
    if max_in_flight or db.engine.dialect.name != "postgresql":
        with db.transaction() as session:
            return claim(session, job_id, now=now, max_in_flight=max_in_flight)
    with db.connection(writes=True) as connection:
        row = connection.execute(_CLAIM, {"job_id": job_id, "now": now}).first()
    if row is None:
        return None
    logs.bind(job_id=row.public_id)
    return Claim(row.id, row.public_id, row.prompt, row.aspect_ratio, row.medium, row.attempts)


def _claim_statement() -> Select[Any]:
    """`claim` as one statement: the job's row locked as it stands, taken if it is free, and
    the move to `submitting` recorded, or nothing at all."""
    jobs: Table = Job.__table__  # type: ignore[assignment]
    now = bindparam("now", type_=jobs.c.updated_at.type)
    # Locked first: the row as it stands once any other writer of the job is done with it.
    was = (
        select(jobs.c.id, jobs.c.status)
        .where(jobs.c.id == bindparam("job_id"))
        .with_for_update(key_share=True)
        .cte("was")
    )
    queued = jobs.c.status == JobStatus.QUEUED.value  # in SET: the value it replaces
    claimed = (
        update(jobs)
        .where(
            jobs.c.id == was.c.id,
            or_(
                queued,
                and_(jobs.c.status == JobStatus.SUBMITTING.value, jobs.c.submission == RETRY),
            ),
        )
        .values(
            status=JobStatus.SUBMITTING.value,
            submission=CALL_IN_FLIGHT,
            attempts=jobs.c.attempts + 1,
            updated_at=now,
            last_error=case(
                (
                    and_(queued, jobs.c.last_error["kind"].as_string() == NOT_ENQUEUED),
                    null(),
                ),
                else_=jobs.c.last_error,
            ),
            version=jobs.c.version + 1,
            change_seq=changes.next_change_seq(),
        )
        .returning(
            jobs.c.id,
            jobs.c.public_id,
            jobs.c.prompt,
            jobs.c.aspect_ratio,
            jobs.c.medium,
            jobs.c.attempts,
            was.c.status.label("was"),
        )
        .cte("claimed")
    )
    moved = insert(Event).from_select(
        ["job_id", "at", "source", "from_status", "to_status", "detail"],
        select(
            claimed.c.id,
            now,
            literal("submit"),
            claimed.c.was,
            literal(JobStatus.SUBMITTING.value),
            null().cast(JSON),
        ).where(claimed.c.was == JobStatus.QUEUED.value),
    )
    return select(claimed).add_cte(moved.cte("moved"))


_CLAIM = _claim_statement()


def accept(
    session: Session, job_id: int, report: Report, *, now: datetime, recheck_after: timedelta
) -> Applied | None:
    """Record the generation the upstream accepted."""
    row = session.execute(_ACCEPTING, {"job_id": job_id}).first()
    if row is None:
        return None
    job = row.Job
    logs.bind(job_id=job.public_id)
    # Read with the lock, rather than each in a statement of its own when needed.
    changes.known_position(session, row.position)
    if not row.subscribed:
        notifications.known_subscriptions(session, [])
    applied = apply_report(
        session, job, report, source="submit", now=now, recheck_after=recheck_after
    )
    job.submission = None
    job.submitted_at = job.submitted_at or now
    job.last_error = None
    return applied


# `lock_job`, with the transaction's place in the change order and whether anybody
# subscribes to finished jobs (the job may finish here). A subscription made meanwhile is
# missed as it would be just after a read of its own: either way it came with the job's end.
_ACCEPTING = (
    select(
        Job,
        changes.next_change_seq().label("position"),
        exists(select(Subscription.id)).label("subscribed"),
    )
    .where(Job.id == bindparam("job_id"))
    .with_for_update(of=Job, key_share=True)
    .options(lazyload(Job.items).joinedload(JobItem.archive))
)


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
    if job is None or job.submission != CALL_IN_FLIGHT:
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


def wait_for_credentials(
    session: Session, job_id: int, pause_reason: dict[str, object], *, now: datetime
) -> None:
    """The job waits `queued` while submissions are paused, and says why.

    A claim whose call was refused (or that waits for a retry) is given back: nothing was
    done upstream.
    """
    job = lock_job(session, job_id=job_id)
    if job is None:
        return
    if job.status == JobStatus.SUBMITTING and job.submission in (CALL_IN_FLIGHT, RETRY):
        record_event(
            session,
            job,
            now,
            "submit",
            to_status=JobStatus.QUEUED.value,
            detail={"reason": CREDENTIALS_REFUSED},
        )
        job.status = JobStatus.QUEUED.value
        job.submission = None
    elif job.status != JobStatus.QUEUED:
        return
    elif (job.last_error or {}).get("kind") == CREDENTIALS_REFUSED:
        return  # it says so already: no write per look
    job.last_error = waiting_reason(pause_reason, now)
    job.updated_at = now


def queued_jobs(session: Session, *, limit: int) -> list[int]:
    """Jobs waiting to be submitted, oldest first."""
    return list(
        session.scalars(
            select(Job.id).where(Job.status == JobStatus.QUEUED.value).order_by(Job.id).limit(limit)
        )
    )


def claimable(session: Session, job_id: int) -> tuple[bool, Pause | None]:
    """Whether a submission task has anything to do for this job, and the pause on
    submissions if there is one (one read, no lock)."""
    row = session.execute(_CLAIMABLE, {"job_id": job_id}).first()
    if row is None:
        return False, None
    free = row.status == JobStatus.QUEUED or (
        row.status == JobStatus.SUBMITTING and row.submission == RETRY
    )
    return free, pause_of(row)


_CLAIMABLE = (
    select(Job.status, Job.submission, *PAUSE_COLUMNS)
    .outerjoin(UpstreamState, UpstreamState.name == NAME)
    .where(Job.id == bindparam("job_id"))
)


def scheduled(session: Session, job_id: int, *, at: datetime) -> None:
    """The job's submission waits for a slot in the pace at `at`: until then reconciliation
    does not take it for lost."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
        .values(next_check_at=at)
        .execution_options(synchronize_session=False)
    )
