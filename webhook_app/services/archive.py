"""Keeping our own copy of every result image, because the upstream's preview URLs expire.

An item's archive is requested in the transaction where it first gets a preview URL. Each
attempt is one download and one store; a passing failure is tried again later (reconciliation
sends what is due), anything else fails the archive with its reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import requests
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from webhook_app.archive.fetch import Fetched, FetchError, fetch_image
from webhook_app.archive.images import EXTENSIONS
from webhook_app.archive.storage import Storage, StorageError
from webhook_app.infra import logs, metrics
from webhook_app.infra.db import Database, after_commit
from webhook_app.infra.queue import ARCHIVE_ITEMS
from webhook_app.models import ItemArchive, Job, JobItem

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
    wanted = [item for item in items if item.archive is None]
    if not wanted:
        return
    # Written by the ORM's flush: the archives of a whole batch of callbacks in one
    # multi-row INSERT (items the report just revealed are inserted first).
    for item in wanted:
        item.archive = ItemArchive(**new_archive(now))
    ask_for_archives(session, [item.uuid for item in wanted])


def new_archive(now: datetime) -> dict[str, Any]:
    """The columns of an archive just requested: pending, leased to the task asked for it."""
    return {"state": PENDING, "attempts": 0, "created_at": now, "next_attempt_at": now + LEASE}


def ask_for_archives(session: Session, item_uuids: Sequence[str]) -> None:
    """Send, after the commit, a few messages for every item the transaction revealed; each
    archive keeps its own state."""
    if item_uuids:
        after_commit(session, ARCHIVE_ITEMS, *item_uuids, gathered=48)


@dataclass(frozen=True)
class Attempt:
    item_uuid: str
    url: str
    key_stem: str


def start_attempts(session: Session, item_uuids: Sequence[str], *, now: datetime) -> list[Attempt]:
    """Take the pending archives among these items, each for one attempt."""
    rows = session.execute(
        _locking(item_uuids, JobItem.preview_url, Job.public_id).join(Job, JobItem.job_id == Job.id)
    ).all()
    if len({job_public_id for *_, job_public_id in rows}) == 1:
        logs.bind(job_id=rows[0].public_id)
    attempts = []
    for archive, item_uuid, url, job_public_id in rows:
        if archive.state != PENDING or not url:
            continue
        archive.attempts += 1
        archive.next_attempt_at = now + LEASE
        attempts.append(Attempt(item_uuid, url, f"{job_public_id}/{item_uuid}"))
    return attempts


def _locking(item_uuids: Sequence[str], *columns: Any) -> Select[Any]:
    """These items' archives with each item's uuid (and `columns`), locked."""
    return (
        select(ItemArchive, JobItem.uuid, *columns)
        .join(JobItem, ItemArchive.item_id == JobItem.id)
        .where(JobItem.uuid.in_(item_uuids))
        .order_by(ItemArchive.id)  # one locking order, so two tasks never deadlock
        .with_for_update(of=ItemArchive)
    )


@dataclass(frozen=True)
class Kept:
    key: str
    fetched: Fetched


@dataclass(frozen=True)
class Failed:
    reason: str
    transient: bool


def record_outcomes(
    session: Session, outcomes: Mapping[str, Kept | Failed], *, now: datetime
) -> dict[str, str]:
    """Keep what each attempt achieved; the archives' states after it, by item."""
    archives = {
        item_uuid: archive for archive, item_uuid in session.execute(_locking(list(outcomes)))
    }
    states = {}
    for item_uuid, outcome in outcomes.items():
        archive = archives.get(item_uuid)
        if isinstance(outcome, Kept):
            if archive is not None:
                _archived(archive, outcome, now)
            states[item_uuid] = ARCHIVED
        elif archive is None:
            states[item_uuid] = FAILED
        else:
            states[item_uuid] = _failed(archive, outcome, now)
    return states


def _archived(archive: ItemArchive, kept: Kept, now: datetime) -> None:
    fetched = kept.fetched
    archive.state = ARCHIVED
    archive.storage_key = kept.key
    archive.sha256 = fetched.sha256
    archive.size = len(fetched.data)
    archive.content_type = fetched.info.content_type
    archive.width, archive.height = fetched.info.width, fetched.info.height
    archive.archived_at = now
    archive.next_attempt_at = None
    archive.last_error = None


def _failed(archive: ItemArchive, failed: Failed, now: datetime) -> str:
    """Schedule another attempt for a passing failure, else fail the archive; the new state."""
    if archive.state != PENDING:
        return archive.state
    archive.last_error = failed.reason[:500]
    if failed.transient and archive.attempts < MAX_ATTEMPTS:
        archive.next_attempt_at = now + retry_delay(archive.attempts)
    else:
        archive.state = FAILED
        archive.next_attempt_at = None
    return archive.state


def archive_items(
    db: Database,
    storage: Storage,
    http: requests.Session,
    item_uuids: Sequence[str],
    *,
    clock: Callable[[], datetime],
    max_bytes: int,
    timeout: float,
) -> list[str | None]:
    """One attempt at archiving each item; the archives' states after it (None: skipped).

    Two transactions in all: one takes the attempts, one keeps what they achieved. A task that
    dies in between leaves its archives pending until their lease ends; then they are sent again.
    """
    with db.transaction() as session:
        attempts = start_attempts(session, item_uuids, now=clock())
    outcomes = {
        attempt.item_uuid: _attempt(storage, http, attempt, max_bytes=max_bytes, timeout=timeout)
        for attempt in attempts
    }
    states: dict[str, str] = {}
    if outcomes:
        with db.transaction() as session:
            states = record_outcomes(session, outcomes, now=clock())
    for state in states.values():
        metrics.ARCHIVES.labels(outcome="retry" if state == PENDING else state).inc()
    return [states.get(item_uuid) for item_uuid in item_uuids]


def _attempt(
    storage: Storage, http: requests.Session, attempt: Attempt, *, max_bytes: int, timeout: float
) -> Kept | Failed:
    try:
        fetched = fetch_image(http, attempt.url, max_bytes=max_bytes, timeout=timeout)
        key = f"{attempt.key_stem}.{EXTENSIONS[fetched.info.format]}"
        storage.put(key, fetched.data, fetched.info.content_type)
    except (FetchError, StorageError) as exc:
        transient = exc.transient if isinstance(exc, FetchError) else True
        return Failed(str(exc), transient)
    return Kept(key, fetched)


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
