"""Moving a job forward, and merging what the upstream reported into it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

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
    record_event(session, job, now, source, to_status=target.value, detail=detail)
    job.status = target.value
    job.updated_at = now
    if target in FINAL or target is JobStatus.TIMED_OUT:
        job.finished_at = now
    if target in FINAL:
        job.next_check_at = None
    if target in TERMINAL:
        notify_finished(session, job, target.value, now=now)
        after_commit(session, JOB_FINISHED, (job.id, target.value), gathered=50)
    if target is JobStatus.COMPLETED:
        # Each job's items are looked up one call each: a few jobs per task keep it short.
        after_commit(session, ENRICH_JOB, job.id, gathered=8)
    return True


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
    if job.generation_uuid is None:
        # The callback URL names the job, so a submission whose answer was lost is adopted here.
        job.generation_uuid = report.reference
    elif job.generation_uuid != report.reference:
        return Applied(Outcome.MISMATCH, detail="generation uuid differs from the job's")

    previewed = {item.uuid for item in job.items if item.preview_url}
    learned = _merge_items(job, report)
    # The upstream keeps previews only for a while: archive each as soon as its URL is known.
    request_archives(
        session, [i for i in job.items if i.preview_url and i.uuid not in previewed], now=now
    )
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
    moved = target is not None and move(
        session,
        job,
        target,
        source,
        now,
        {"upstream_status": report.upstream_status, **(detail or {})},
    )
    if moved and was == JobStatus.SUBMITTING:
        job.submission = None
        job.submitted_at = job.submitted_at or now
    if job.status not in FINAL and (moved or learned):
        # Progress seen: the next confirmation is due one overdue period from now.
        job.next_check_at = now + recheck_after
    if learned:
        job.updated_at = now

    if unconfirmed:
        return Applied(Outcome.UNCONFIRMED, detail=f"upstream status {report.upstream_status!r}")
    completed = moved and job.status == JobStatus.COMPLETED
    return Applied(Outcome.APPLIED if moved or learned else Outcome.NO_CHANGE, completed=completed)


def _merge_items(job: Job, report: Report) -> bool:
    known = {item.uuid: item for item in job.items}
    learned = False
    for reported in report.items:
        item = known.get(reported.uuid)
        if item is None:
            item = JobItem(job_id=job.id, position=len(job.items), uuid=reported.uuid)
            job.items.append(item)
            known[item.uuid] = item
            learned = True
        if reported.dp_item_id and item.dp_item_id is None:
            item.dp_item_id, learned = reported.dp_item_id, True
        if reported.preview_url and not item.preview_url:
            item.preview_url, learned = reported.preview_url, True
    return learned
