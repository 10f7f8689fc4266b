"""Keeping our own copy of every result image, because the upstream's preview URLs expire.

An item's archive is requested in the transaction where it first gets a preview URL. Each
attempt is one download and one store; a passing failure is tried again later (reconciliation
sends what is due), anything else fails the archive with its reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import requests
from sqlalchemy import select
from sqlalchemy.orm import Session

from webhook_app import logs, metrics
from webhook_app.archive.fetch import Fetched, FetchError, fetch_image
from webhook_app.archive.images import EXTENSIONS
from webhook_app.archive.storage import Storage, StorageError
from webhook_app.db import Database, after_commit
from webhook_app.models import ItemArchive, Job, JobItem
from webhook_app.queue import ARCHIVE_ITEMS

PENDING, ARCHIVED, FAILED = "pending", "archived", "failed"
MAX_ATTEMPTS = 8
# While a task holds an attempt, reconciliation leaves the archive alone for this long.
LEASE = timedelta(minutes=5)


def image_path(job_public_id: str, item_uuid: str) -> str:
    """Where the query API serves an item's image."""
    return f"/api/v1/jobs/{job_public_id}/items/{item_uuid}/image"


def retry_delay(attempts: int) -> timedelta:
    """10 s after the first failure, doubling, at most 30 minutes (about 40 minutes in all)."""
    return min(timedelta(minutes=30), timedelta(seconds=10) * 2 ** max(attempts - 1, 0))


def request_archives(session: Session, items: Iterable[JobItem], *, now: datetime) -> None:
    """Mark each item's image as to be archived and ask for it once the change is committed."""
    requested = []
    for item in items:
        if item.archive is not None:
            continue
        item.archive = ItemArchive(
            state=PENDING, attempts=0, created_at=now, next_attempt_at=now + LEASE
        )
        requested.append(item.uuid)
    if requested:
        # One message for the items a report revealed together; each keeps its own state.
        after_commit(session, ARCHIVE_ITEMS, *requested)


@dataclass(frozen=True)
class Attempt:
    item_uuid: str
    url: str
    key_stem: str


def start_attempt(session: Session, item_uuid: str, *, now: datetime) -> Attempt | None:
    """Take a pending archive for one attempt, or None if there is nothing to do."""
    row = session.execute(
        select(ItemArchive, JobItem.preview_url, Job.public_id)
        .join(JobItem, ItemArchive.item_id == JobItem.id)
        .join(Job, JobItem.job_id == Job.id)
        .where(JobItem.uuid == item_uuid)
        .with_for_update(of=ItemArchive)
    ).first()
    if row is None:
        return None
    archive, url, job_public_id = row
    logs.bind(job_id=job_public_id)
    if archive.state != PENDING or not url:
        return None
    archive.attempts += 1
    archive.next_attempt_at = now + LEASE
    return Attempt(item_uuid, url, f"{job_public_id}/{item_uuid}")


def _locked(session: Session, item_uuid: str) -> ItemArchive | None:
    return session.scalar(
        select(ItemArchive)
        .join(JobItem, ItemArchive.item_id == JobItem.id)
        .where(JobItem.uuid == item_uuid)
        .with_for_update(of=ItemArchive)
    )


def record_archived(
    session: Session, item_uuid: str, fetched: Fetched, key: str, *, now: datetime
) -> None:
    archive = _locked(session, item_uuid)
    if archive is None:
        return
    archive.state = ARCHIVED
    archive.storage_key = key
    archive.sha256 = fetched.sha256
    archive.size = len(fetched.data)
    archive.content_type = fetched.info.content_type
    archive.width, archive.height = fetched.info.width, fetched.info.height
    archive.archived_at = now
    archive.next_attempt_at = None
    archive.last_error = None


def record_failure(
    session: Session, item_uuid: str, reason: str, *, transient: bool, now: datetime
) -> str:
    """Schedule another attempt for a passing failure, else fail the archive; the new state."""
    archive = _locked(session, item_uuid)
    if archive is None or archive.state != PENDING:
        return archive.state if archive else FAILED
    archive.last_error = reason[:500]
    if transient and archive.attempts < MAX_ATTEMPTS:
        archive.next_attempt_at = now + retry_delay(archive.attempts)
    else:
        archive.state = FAILED
        archive.next_attempt_at = None
    return archive.state


def archive_item(
    db: Database,
    storage: Storage,
    http: requests.Session,
    item_uuid: str,
    *,
    clock: Callable[[], datetime],
    max_bytes: int,
    timeout: float,
) -> str | None:
    """One attempt at archiving one item; returns the archive's state after it (None: skipped)."""
    with db.transaction() as session:
        attempt = start_attempt(session, item_uuid, now=clock())
    if attempt is None:
        return None
    try:
        fetched = fetch_image(http, attempt.url, max_bytes=max_bytes, timeout=timeout)
        key = f"{attempt.key_stem}.{EXTENSIONS[fetched.info.format]}"
        storage.put(key, fetched.data, fetched.info.content_type)
    except (FetchError, StorageError) as exc:
        transient = exc.transient if isinstance(exc, FetchError) else True
        with db.transaction() as session:
            state = record_failure(session, item_uuid, str(exc), transient=transient, now=clock())
        metrics.ARCHIVES.labels(outcome="retry" if state == PENDING else FAILED).inc()
        return state
    with db.transaction() as session:
        record_archived(session, item_uuid, fetched, key, now=clock())
    metrics.ARCHIVES.labels(outcome=ARCHIVED).inc()
    return ARCHIVED


def due_archives(session: Session, *, now: datetime, limit: int = 200) -> list[str]:
    """Pending archives whose next attempt is due (lost tasks, retries); leased as they go."""
    rows = session.execute(
        select(ItemArchive, JobItem.uuid)
        .join(JobItem, ItemArchive.item_id == JobItem.id)
        .where(ItemArchive.state == PENDING, ItemArchive.next_attempt_at <= now)
        .order_by(ItemArchive.next_attempt_at)
        .limit(limit)
        .with_for_update(of=ItemArchive, skip_locked=True)
    ).all()
    for archive, _ in rows:
        archive.next_attempt_at = now + LEASE
    return [item_uuid for _, item_uuid in rows]


def find_item(session: Session, job_public_id: str, item_uuid: str) -> JobItem | None:
    return session.scalar(
        select(JobItem)
        .join(Job, JobItem.job_id == Job.id)
        .where(Job.public_id == job_public_id, JobItem.uuid == item_uuid)
    )
