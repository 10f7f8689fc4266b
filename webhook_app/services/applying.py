"""Applying stored deliveries: claimed in batches, merged job by job, each given its outcome.

Appliers (a thread in every worker process, and reconciliation for what none took) call
`apply_pending`. On PostgreSQL a batch claims its deliveries with FOR UPDATE SKIP LOCKED, so
appliers on many machines share the work without waiting for each other, and a batch whose
applier dies is rolled back and claimed again by the next. On SQLite writers take turns.
Applying a delivery twice changes nothing: it merges by the monotonic rules of
`services.progress`, and it is marked with its outcome in the transaction that applies it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Row, Table, bindparam, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, selectinload

from webhook_app.depositphotos.kinds.image_generation import read_generation
from webhook_app.depositphotos.payloads import (
    PayloadError,
    ReportedFailure,
    decode_body,
    unwrap_envelope,
)
from webhook_app.infra import metrics
from webhook_app.infra.db import Database, after_commit, restore_follow_ups, snapshot_follow_ups
from webhook_app.infra.queue import REFRESH_JOB
from webhook_app.models import Delivery, Job, JobItem, utcnow
from webhook_app.services.progress import NEEDS_CONFIRMATION, Applied, Outcome, apply_report

log = logging.getLogger(__name__)

_DELIVERIES = cast(Table, Delivery.__table__)
# The literal condition of the pending index, so that both databases use it.
_PENDING = text("deliveries.outcome = 'pending'")
_CLAIM = (
    select(_DELIVERIES.c.id, _DELIVERIES.c.job_id, _DELIVERIES.c.body, _DELIVERIES.c.content_type)
    .where(_PENDING)
    .order_by(_DELIVERIES.c.id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_CLAIM_OLD = _CLAIM.where(_DELIVERIES.c.first_received_at < bindparam("before"))
_ANY_PENDING = select(_DELIVERIES.c.id).where(_PENDING).limit(1)
# Every job of a batch locked in one statement, in id order (so appliers never deadlock);
# the items are read by a second statement, once the locks are held. FOR NO KEY UPDATE: the
# receiver's insert of a delivery takes a key-share lock on its job, which this must not wait
# for (nor make the receiver wait for, or the two would deadlock over a repeated delivery).
_LOCK_JOBS = (
    select(Job)
    .where(Job.id.in_(bindparam("ids", expanding=True)))
    .order_by(Job.id)
    .with_for_update(of=Job, key_share=True)
    .options(selectinload(Job.items).selectinload(JobItem.archive))
)
_MARK = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id == bindparam("delivery_id"))
    .values(outcome=bindparam("outcome"), detail=bindparam("detail"), applied_at=bindparam("at"))
)


def anything_pending(db: Database) -> bool:
    """Whether a delivery waits to be applied: one indexed read, taking no lock."""
    with db.connection() as connection:
        return connection.execute(_ANY_PENDING).first() is not None


def apply_pending(
    db: Database,
    *,
    limit: int,
    recheck_after: timedelta,
    received_before: datetime | None = None,
) -> Counter[str]:
    """Claim up to `limit` pending deliveries (only those received before `received_before`,
    if given), apply them and record their outcomes, in one transaction.

    Returns how many got each outcome: empty when nothing was pending. A delivery whose
    merge fails unexpectedly (a bug, a unique key saying no) is kept apart as `error`, its
    job left as it was and confirmed by polling; the other jobs of its batch go on.
    """
    try:
        with db.transaction() as session:
            return _apply_batch(session, limit, recheck_after, received_before, isolated=False)
    except DBAPIError as exc:
        if not isinstance(exc, IntegrityError):
            raise  # the database is away: the deliveries stay pending, for the next attempt
        failure: Exception = exc
    except Exception as exc:
        failure = exc
    log.warning("a batch of deliveries failed (%s): applying it job by job", type(failure).__name__)
    with db.transaction() as session:
        return _apply_batch(session, limit, recheck_after, received_before, isolated=True)


def _apply_batch(
    session: Session,
    limit: int,
    recheck_after: timedelta,
    received_before: datetime | None,
    *,
    isolated: bool,
) -> Counter[str]:
    claim = _CLAIM if received_before is None else _CLAIM_OLD
    claimed = session.execute(claim, {"limit": limit, "before": received_before}).all()
    if not claimed:
        return Counter()
    by_job: dict[int, list[Any]] = {}
    for row in claimed:
        by_job.setdefault(row.job_id, []).append(row)
    jobs = session.scalars(_LOCK_JOBS, {"ids": list(by_job)}).all()
    now = utcnow()
    marks: list[dict[str, Any]] = []
    for job in jobs:
        rows = by_job[job.id]
        if isolated:
            applied = _apply_alone(session, job, rows, now=now, recheck_after=recheck_after)
        else:
            applied = _apply_job(session, job, rows, now=now, recheck_after=recheck_after)
        marks += [
            {"delivery_id": row.id, "outcome": a.outcome.value, "detail": a.detail, "at": now}
            for row, a in zip(rows, applied, strict=True)
        ]
    session.connection().execute(_MARK, marks)
    outcomes = Counter(mark["outcome"] for mark in marks)
    for outcome, count in outcomes.items():
        metrics.DELIVERIES_APPLIED.labels(outcome=outcome).inc(count)
    return outcomes


def _apply_job(
    session: Session, job: Job, rows: Sequence[Row[Any]], *, now: datetime, recheck_after: timedelta
) -> list[Applied]:
    applied = [_apply(session, job, row, now=now, recheck_after=recheck_after) for row in rows]
    if any(a.outcome in NEEDS_CONFIRMATION for a in applied):
        after_commit(session, REFRESH_JOB, job.id)
    return applied


def _apply_alone(
    session: Session, job: Job, rows: Sequence[Row[Any]], *, now: datetime, recheck_after: timedelta
) -> list[Applied]:
    """Apply one job's deliveries inside a savepoint: if that fails, only they are set apart."""
    kept = snapshot_follow_ups(session)
    try:
        with session.begin_nested():
            return _apply_job(session, job, rows, now=now, recheck_after=recheck_after)
    except Exception as exc:
        if isinstance(exc, DBAPIError) and not isinstance(exc, IntegrityError):
            raise
        log.exception("deliveries for job %s could not be applied", job.public_id)
        restore_follow_ups(session, kept)
        after_commit(session, REFRESH_JOB, job.id)
        return [Applied(Outcome.ERROR, detail=type(exc).__name__) for _ in rows]


def _apply(
    session: Session, job: Job, row: Row[Any], *, now: datetime, recheck_after: timedelta
) -> Applied:
    try:
        report = read_generation(unwrap_envelope(decode_body(row.body, row.content_type)))
    except ReportedFailure as exc:
        return Applied(Outcome.UPSTREAM_FAILURE, detail=str(exc))
    except PayloadError as exc:
        return Applied(Outcome.UNPARSEABLE, detail=str(exc))
    return apply_report(
        session, job, report, source="callback", now=now, recheck_after=recheck_after
    )
