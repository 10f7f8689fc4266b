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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, cast

from sqlalchemy import Row, Select, Table, bindparam, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from webhook_app.changes import position
from webhook_app.depositphotos.kinds.image_generation import read_generation
from webhook_app.depositphotos.payloads import (
    PayloadError,
    ReportedFailure,
    decode_body,
    unwrap_envelope,
)
from webhook_app.depositphotos.reports import Report
from webhook_app.infra import metrics
from webhook_app.infra.bulk import RowsInsert, RowsUpdate
from webhook_app.infra.db import Database, after_commit, restore_follow_ups, snapshot_follow_ups
from webhook_app.infra.queue import REFRESH_JOB
from webhook_app.models import Delivery, Event, ItemArchive, Job, JobItem, utcnow
from webhook_app.services.archive import ask_for_archives, new_archive
from webhook_app.services.notifications import notify_all_finished
from webhook_app.services.progress import (
    NEEDS_CONFIRMATION,
    Applied,
    Outcome,
    announce,
    merge_report,
)
from webhook_app.states import TERMINAL, JobStatus

log = logging.getLogger(__name__)

_DELIVERIES = cast(Table, Delivery.__table__)
_JOBS = cast(Table, Job.__table__)
_ITEMS = cast(Table, JobItem.__table__)
_ARCHIVES = cast(Table, ItemArchive.__table__)
_EVENTS = cast(Table, Event.__table__)
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
# The columns of a job a merge reads and writes (services.progress.merge_report).
_MERGED = (
    "status",
    "generation_uuid",
    "upstream_status",
    "purchase_status",
    "submission",
    "submitted_at",
    "finished_at",
    "next_check_at",
    "updated_at",
)
# The claimed deliveries and every job of the batch, locked in one statement: the jobs in id
# order (so appliers never deadlock), after the deliveries, as they were before; the items
# are read by a second statement, once the locks are held. FOR NO KEY UPDATE: the receiver's
# insert of a delivery takes a key-share lock on its job, which this must not wait for (nor
# make the receiver wait for, or the two would deadlock over a repeated delivery). Plain
# rows, not ORM objects, and plain statements to write them back: a batch is a few
# statements.
_JOB_COLUMNS = ("id", *_MERGED, "created_at")


def _claiming(claim: Select[Any]) -> Select[Any]:
    claimed = claim.cte("claimed")
    locked = (
        select(*(_JOBS.c[name] for name in _JOB_COLUMNS))
        .where(_JOBS.c.id.in_(select(claimed.c.job_id)))
        .order_by(_JOBS.c.id)
        .with_for_update(key_share=True)
        .cte("locked")
    )
    return (
        select(claimed, *(locked.c[name].label(f"locked_{name}") for name in _JOB_COLUMNS))
        .join(locked, locked.c.id == claimed.c.job_id)
        .order_by(locked.c.id, claimed.c.id)
    )


_CLAIM_AND_LOCK = _claiming(_CLAIM)
_CLAIM_OLD_AND_LOCK = _claiming(_CLAIM_OLD)
_READ_ITEMS = (
    select(
        _ITEMS.c.job_id,
        _ITEMS.c.id,
        _ITEMS.c.uuid,
        _ITEMS.c.position,
        _ITEMS.c.dp_item_id,
        _ITEMS.c.preview_url,
        _ARCHIVES.c.id.is_not(None).label("archived"),
    )
    .select_from(_ITEMS.outerjoin(_ARCHIVES, _ARCHIVES.c.item_id == _ITEMS.c.id))
    .where(_ITEMS.c.job_id.in_(bindparam("ids", expanding=True)))
    .order_by(_ITEMS.c.job_id, _ITEMS.c.position)
)
_WRITTEN = tuple(f"{name}_" for name in _MERGED)  # their parameters' names
_WRITE_JOBS = RowsUpdate(_JOBS, ("id", "job_id"), dict(zip(_MERGED, _WRITTEN, strict=True)))
# What the merge changed is shown (not only the next check): a new version and feed position.
_WRITE_SHOWN_JOBS = RowsUpdate(
    _JOBS,
    ("id", "job_id"),
    dict(zip(_MERGED, _WRITTEN, strict=True)),
    also={"version": _JOBS.c.version + 1, "change_seq": bindparam("seq")},
)
_WRITE_ITEMS = RowsUpdate(
    _ITEMS, ("id", "item_id"), {"dp_item_id": "dp_item_id_", "preview_url": "preview_url_"}
)
_ADD_ITEM = insert(_ITEMS).returning(_ITEMS.c.id)
_ADD_ARCHIVES = RowsInsert(_ARCHIVES, ["item_id", *new_archive(utcnow())])
_ADD_EVENTS = RowsInsert(_EVENTS, ["job_id", "at", "source", "from_status", "to_status", "detail"])
_MARK = RowsUpdate(
    _DELIVERIES,
    ("id", "delivery_id"),
    {"outcome": "outcome", "detail": "detail"},
    also={"applied_at": bindparam("at")},
)


@dataclass(slots=True, eq=False)
class _Item:
    """An item's row as a merge reads and writes it."""

    job_id: int
    uuid: str
    position: int
    dp_item_id: int | None = None
    preview_url: str | None = None
    id: int | None = None  # None until a report reveals it and it is inserted
    archived: bool = False  # its archive exists, or is requested by this batch


@dataclass(slots=True, eq=False)
class _Job:
    """A locked job's row (the columns in _MERGED) as a merge reads and writes it."""

    id: int
    status: str
    generation_uuid: str | None
    upstream_status: str | None
    purchase_status: str | None
    submission: str | None
    submitted_at: datetime | None
    finished_at: datetime | None
    next_check_at: datetime | None
    updated_at: datetime
    created_at: datetime  # read, never written: a finished job's duration
    items: list[_Item] = field(default_factory=list)

    def merged(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _MERGED)


class _Writes:
    """What the merges of some jobs changed, written back in a few statements."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.jobs: list[tuple[_Job, bool]] = []  # each changed job, and whether it is shown
        self.items: list[_Item] = []  # changed items (new ones among them)
        self.archives: list[_Item] = []
        self.events: list[dict[str, Any]] = []
        self.finished: list[tuple[int, str]] = []

    def merge(
        self,
        session: Session,
        job: _Job,
        reports: Sequence[Report | Applied],
        *,
        recheck_after: timedelta,
    ) -> list[Applied]:
        """Merge each report (or keep the outcome of a delivery that held none) into the job."""
        fields = job.merged()
        items = {item.uuid: (item.dp_item_id, item.preview_url) for item in job.items}
        applied = [
            report
            if isinstance(report, Applied)
            else self._merge(session, job, report, recheck_after=recheck_after)
            for report in reports
        ]
        changed = [
            item
            for item in job.items
            if items.get(item.uuid) != (item.dp_item_id, item.preview_url)
        ]
        self.items += changed
        shown = bool(changed) or any(
            was != now
            for name, was, now in zip(_MERGED, fields, job.merged(), strict=True)
            if name != "next_check_at"
        )
        if shown or job.merged() != fields:
            self.jobs.append((job, shown))
        return applied

    def _merge(
        self, session: Session, job: _Job, report: Report, *, recheck_after: timedelta
    ) -> Applied:
        merged = merge_report(
            job, report, now=self.now, recheck_after=recheck_after, new_item=partial(_Item, job.id)
        )
        for item in merged.previewed:
            if not item.archived:
                item.archived = True
                self.archives.append(item)
        if merged.moved_from is not None:
            self.events.append(
                {
                    "job_id": job.id,
                    "at": self.now,
                    "source": "callback",
                    "from_status": merged.moved_from,
                    "to_status": job.status,
                    "detail": merged.detail,
                }
            )
            target = JobStatus(job.status)
            if target in TERMINAL:
                self.finished.append((job.id, job.status))
            announce(session, job, target)
        return merged.applied

    def write(self, session: Session) -> None:
        connection = session.connection()
        revealed = [item for item in self.items if item.id is None]
        for item in revealed:  # rare, and each one's id is needed for its archive
            values = {"job_id": item.job_id, "uuid": item.uuid, "position": item.position}
            values |= {"dp_item_id": item.dp_item_id, "preview_url": item.preview_url}
            item.id = connection.execute(_ADD_ITEM, values).scalar_one()
        updated = [
            {"item_id": item.id, "dp_item_id_": item.dp_item_id, "preview_url_": item.preview_url}
            for item in self.items
            if item not in revealed
        ]
        _WRITE_ITEMS.execute(connection, updated)
        if self.archives:
            archives = [{"item_id": item.id, **new_archive(self.now)} for item in self.archives]
            _ADD_ARCHIVES.execute(connection, archives)
            ask_for_archives(session, [item.uuid for item in self.archives])
        _ADD_EVENTS.execute(connection, self.events)
        seq = position(session) if any(shown for _, shown in self.jobs) else None
        for shown, statement in ((True, _WRITE_SHOWN_JOBS), (False, _WRITE_JOBS)):
            rows = [
                {"job_id": job.id, **dict(zip(_WRITTEN, job.merged(), strict=True))}
                for job, is_shown in self.jobs
                if is_shown is shown
            ]
            statement.execute(connection, rows, **({"seq": seq} if shown else {}))
        notify_all_finished(session, self.finished, now=self.now)


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
    claim = _CLAIM_AND_LOCK if received_before is None else _CLAIM_OLD_AND_LOCK
    claimed = session.execute(claim, {"limit": limit, "before": received_before}).all()
    if not claimed:
        return Counter()
    by_job: dict[int, list[Any]] = {}
    for row in claimed:
        by_job.setdefault(row.job_id, []).append(row)
    jobs = _with_items(session, [_locked_job(rows[0]) for rows in by_job.values()])
    now = utcnow()
    reports = {job.id: [_read(row) for row in by_job[job.id]] for job in jobs}
    applied: dict[int, list[Applied]] = {}
    if isolated:
        for job in jobs:
            applied |= _apply_alone(session, job, reports, now=now, recheck_after=recheck_after)
    else:
        applied = _apply_jobs(session, jobs, reports, now=now, recheck_after=recheck_after)
    marks = [
        {"delivery_id": row.id, "outcome": a.outcome.value, "detail": a.detail}
        for job in jobs
        for row, a in zip(by_job[job.id], applied[job.id], strict=True)
    ]
    _MARK.execute(session.connection(), marks, at=now)
    outcomes = Counter(mark["outcome"] for mark in marks)
    for outcome, count in outcomes.items():
        metrics.DELIVERIES_APPLIED.labels(outcome=outcome).inc(count)
    return outcomes


def _locked_job(row: Row[Any]) -> _Job:
    return _Job(**{name: getattr(row, f"locked_{name}") for name in _JOB_COLUMNS})


def _with_items(session: Session, locked: list[_Job]) -> list[_Job]:
    jobs = {job.id: job for job in locked}
    for row in session.connection().execute(_READ_ITEMS, {"ids": list(jobs)}):
        item = _Item(
            row.job_id,
            row.uuid,
            row.position,
            row.dp_item_id,
            row.preview_url,
            row.id,
            row.archived,
        )
        jobs[row.job_id].items.append(item)
    return locked


def _apply_jobs(
    session: Session,
    jobs: Sequence[_Job],
    reports: dict[int, list[Report | Applied]],
    *,
    now: datetime,
    recheck_after: timedelta,
) -> dict[int, list[Applied]]:
    writes = _Writes(now)
    applied = {}
    for job in jobs:
        applied[job.id] = writes.merge(session, job, reports[job.id], recheck_after=recheck_after)
        if any(a.outcome in NEEDS_CONFIRMATION for a in applied[job.id]):
            after_commit(session, REFRESH_JOB, job.id)
    writes.write(session)
    return applied


def _apply_alone(
    session: Session,
    job: _Job,
    reports: dict[int, list[Report | Applied]],
    *,
    now: datetime,
    recheck_after: timedelta,
) -> dict[int, list[Applied]]:
    """Apply one job's deliveries inside a savepoint: if that fails, only they are set apart."""
    kept = snapshot_follow_ups(session)
    try:
        with session.begin_nested():
            return _apply_jobs(session, [job], reports, now=now, recheck_after=recheck_after)
    except Exception as exc:
        if isinstance(exc, DBAPIError) and not isinstance(exc, IntegrityError):
            raise
        log.exception("deliveries for job %s could not be applied", job.id)
        restore_follow_ups(session, kept)
        after_commit(session, REFRESH_JOB, job.id)
        return {
            job.id: [Applied(Outcome.ERROR, detail=type(exc).__name__) for _ in reports[job.id]]
        }


def _read(row: Row[Any]) -> Report | Applied:
    """The report a delivery holds, or its outcome if it holds none."""
    try:
        return read_generation(unwrap_envelope(decode_body(row.body, row.content_type)))
    except ReportedFailure as exc:
        return Applied(Outcome.UPSTREAM_FAILURE, detail=str(exc))
    except PayloadError as exc:
        return Applied(Outcome.UNPARSEABLE, detail=str(exc))
