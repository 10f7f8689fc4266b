"""Moving a job forward, and merging what the upstream reported into it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from webhook_app.depositphotos.reports import Report
from webhook_app.infra.db import after_commit
from webhook_app.infra.queue import ENRICH_JOB, JOB_FINISHED
from webhook_app.models import Event, Job, JobItem
from webhook_app.services.archive import request_archives
from webhook_app.services.notifications import notify_finished
from webhook_app.states import FINAL, TERMINAL, JobStatus, can_move, rank


class Outcome(StrEnum):
    PENDING = "pending"  # kept by the receiver, not merged yet
    APPLIED = "applied"  # the job moved or learned something new
    NO_CHANGE = "no_change"  # nothing the job did not already know (late or repeated)
    UNCONFIRMED = "unconfirmed"  # kept, but the report needs confirming with a poll
    MISMATCH = "mismatch"  # about another generation than the job's
    UNPARSEABLE = "unparseable"
    UPSTREAM_FAILURE = "upstream_failure"
    ERROR = "error"


NEEDS_CONFIRMATION = frozenset(
    {Outcome.UNCONFIRMED, Outcome.UNPARSEABLE, Outcome.UPSTREAM_FAILURE, Outcome.ERROR}
)


@dataclass(frozen=True)
class Applied:
    outcome: Outcome
    completed: bool = False  # the job has just become completed
    detail: str | None = None


def record_event(
    session: Session,
    job: Job,
    now: datetime,
    source: str,
    *,
    to_status: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Add a line to the job's story. Written by the ORM's flush: the lines of a batch of
    jobs go in one multi-row INSERT, in the order they were added."""
    session.add(
        Event(
            job_id=job.id,
            at=now,
            source=source,
            from_status=job.status,
            to_status=to_status,
            detail=detail,
        )
    )


def move(
    session: Session,
    job: Job,
    target: JobStatus,
    source: str,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> bool:
    """Record a forward transition; refuse (and record nothing) any other."""
    if not can_move(job.status, target):
        return False
    was = job.status
    advance(job, target, now)
    _moved(session, job, was, source, now, detail)
    return True


def advance(job: Any, target: JobStatus, now: datetime) -> None:
    """Set the fields a forward transition sets, on a Job or on a plain copy of its row."""
    job.status = target.value
    job.updated_at = now
    if target in FINAL or target is JobStatus.TIMED_OUT:
        job.finished_at = now
    if target in FINAL:
        job.next_check_at = None


def announce(session: Session, job: Any, target: JobStatus) -> None:
    """Ask for what follows a job (a Job or a plain copy of its row and items) reaching
    `target`, once the transaction has committed. The messages carry what their tasks would
    otherwise read back: the job's duration, its items' uuids."""
    if target in TERMINAL:
        if job.created_at is not None and job.finished_at is not None:
            seconds = (job.finished_at - job.created_at).total_seconds()
            after_commit(session, JOB_FINISHED, (job.id, target.value, seconds), gathered=50)
        else:
            after_commit(session, JOB_FINISHED, (job.id, target.value), gathered=50)
    if target is JobStatus.COMPLETED:
        # Each job's items are looked up one call each: a few jobs per task keep it short.
        items = tuple(item.uuid for item in sorted(job.items, key=lambda item: item.position))
        after_commit(session, ENRICH_JOB, (job.id, items), gathered=8)


def _moved(
    session: Session,
    job: Job,
    was: str,
    source: str,
    now: datetime,
    detail: dict[str, Any] | None,
) -> None:
    session.add(
        Event(
            job_id=job.id,
            at=now,
            source=source,
            from_status=was,
            to_status=job.status,
            detail=detail,
        )
    )
    target = JobStatus(job.status)
    if target in TERMINAL:
        notify_finished(session, job, target.value, now=now)
    announce(session, job, target)


@dataclass(frozen=True)
class Merged:
    """What merging a report did, besides the fields it set."""

    applied: Applied
    moved_from: str | None = None  # the status the job left, if it moved
    previewed: Sequence[Any] = ()  # items whose preview URL it has just learned
    detail: dict[str, Any] | None = None  # the transition's, if it moved


def apply_report(
    session: Session,
    job: Job,
    report: Report,
    *,
    source: str,
    now: datetime,
    recheck_after: timedelta,
    detail: dict[str, Any] | None = None,
) -> Applied:
    """Merge a report into a locked job: fill in, never erase, never move backward."""

    def new_item(uuid: str, position: int) -> JobItem:
        return JobItem(job_id=job.id, position=position, uuid=uuid)

    if job.generation_uuid is None and "items" in inspect(job).unloaded:
        # Items are only ever added with the generation's uuid, by the holder of the job's
        # lock: a job without one has none to read.
        set_committed_value(job, "items", [])
    # Written once, at the commit: a flush halfway would write the job twice.
    with session.no_autoflush:
        merged = merge_report(job, report, now=now, recheck_after=recheck_after, new_item=new_item)
        # The upstream keeps previews only for a while: archive each as soon as its URL is
        # known.
        request_archives(session, merged.previewed, now=now)
        if merged.moved_from is not None:
            _moved(
                session,
                job,
                merged.moved_from,
                source,
                now,
                {**(merged.detail or {}), **(detail or {})},
            )
    return merged.applied


def merge_report(
    job: Any,
    report: Report,
    *,
    now: datetime,
    recheck_after: timedelta,
    new_item: Callable[[str, int], Any],
) -> Merged:
    """The rules of a merge, on a Job or on a plain copy of its row and its items' (the
    applier's batches): fill in, never erase, never move backward. `new_item` makes an
    item the report reveals."""
    if job.generation_uuid is None:
        # The callback URL names the job, so a submission whose answer was lost is adopted here.
        job.generation_uuid = report.reference
    elif job.generation_uuid != report.reference:
        return Merged(Applied(Outcome.MISMATCH, detail="generation uuid differs from the job's"))

    previewed = {item.uuid for item in job.items if item.preview_url}
    learned = _merge_items(job, report, new_item)
    target = report.status
    if target is JobStatus.COMPLETED and not (job.items and all(i.dp_item_id for i in job.items)):
        # "completed" without every item id is not the documented end state: hold, then confirm.
        target = JobStatus.PROCESSING
        unconfirmed = True
    else:
        unconfirmed = target is None

    if target is not None and rank(target) >= rank(job.status):
        if job.upstream_status != report.upstream_status:
            job.upstream_status, learned = report.upstream_status, True
        if report.purchase_status and job.purchase_status != report.purchase_status:
            job.purchase_status, learned = report.purchase_status, True

    was = job.status
    moved = False
    if target is not None and can_move(job.status, target):
        advance(job, target, now)
        moved = True
    if moved and was == JobStatus.SUBMITTING:
        job.submission = None
        job.submitted_at = job.submitted_at or now
    if job.status not in FINAL and (moved or learned):
        # Progress seen: the next confirmation is due one overdue period from now.
        job.next_check_at = now + recheck_after
    if learned:
        job.updated_at = now

    if unconfirmed:
        applied = Applied(Outcome.UNCONFIRMED, detail=f"upstream status {report.upstream_status!r}")
    else:
        completed = moved and job.status == JobStatus.COMPLETED
        outcome = Outcome.APPLIED if moved or learned else Outcome.NO_CHANGE
        applied = Applied(outcome, completed=completed)
    return Merged(
        applied,
        moved_from=was if moved else None,
        previewed=[i for i in job.items if i.preview_url and i.uuid not in previewed],
        detail={"upstream_status": report.upstream_status},
    )


def _merge_items(job: Any, report: Report, new_item: Callable[[str, int], Any]) -> bool:
    known = {item.uuid: item for item in job.items}
    learned = False
    for reported in report.items:
        item = known.get(reported.uuid)
        if item is None:
            item = new_item(reported.uuid, len(job.items))
            job.items.append(item)
            known[item.uuid] = item
            learned = True
        if reported.dp_item_id and item.dp_item_id is None:
            item.dp_item_id, learned = reported.dp_item_id, True
        if reported.preview_url and not item.preview_url:
            item.preview_url, learned = reported.preview_url, True
    return learned
