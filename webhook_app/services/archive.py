"""Keeping our own copy of every result image, because the upstream's preview URLs expire.

An item's archive is requested in the transaction where it first gets a preview URL. Each
attempt is one download and one store; a passing failure is tried again later (reconciliation
sends what is due), anything else fails the archive with its reason.

On PostgreSQL a task takes its attempts in one statement and keeps their outcomes in another,
each committed as it returns: the archives are locked in id order, written, and their jobs'
versions bumped (an archive's state is part of its job) in the same statement. SQLite, where a
statement costs no round trip, keeps the ORM's transactions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import requests
from sqlalchemy import (
    CTE,
    Boolean,
    Select,
    Table,
    Text,
    any_,
    bindparam,
    case,
    cast,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import Grouping

from webhook_app import changes
from webhook_app.archive.fetch import Fetched, FetchError, fetch_image
from webhook_app.archive.images import EXTENSIONS
from webhook_app.archive.storage import Storage, StorageError
from webhook_app.infra import logs, metrics
from webhook_app.infra.bulk import ROWS, given_rows, rows_document
from webhook_app.infra.db import Database, after_commit
from webhook_app.infra.queue import ARCHIVE_ITEMS
from webhook_app.models import ItemArchive, Job, JobItem, UTCDateTime

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


# The same rules as `start_attempts` and `record_outcomes`, each in one statement (PostgreSQL).
_ARCHIVES: Table = ItemArchive.__table__  # type: ignore[assignment]
_ITEMS: Table = JobItem.__table__  # type: ignore[assignment]
_JOBS: Table = Job.__table__  # type: ignore[assignment]
# What `record_outcomes` writes that is shown (webhook_app/changes.py hides storage_key and
# next_attempt_at): a job changes when one of these changes in one of its archives.
RECORDED_SHOWN = (
    "state",
    "sha256",
    "size",
    "content_type",
    "width",
    "height",
    "last_error",
    "archived_at",
)
_KEPT = ("storage_key", "sha256", "size", "content_type", "width", "height")


def _touching(job_ids: Select[Any]) -> CTE:
    """The version bump of these jobs (webhook_app/changes.py), their rows locked in id order
    like every writer's, after the archives: a statement writing archives runs it last."""
    locked = (
        select(_JOBS.c.id)
        .where(_JOBS.c.id.in_(job_ids))
        .order_by(_JOBS.c.id)
        .with_for_update(key_share=True)
        .cte("jobs_locked")
    )
    return (
        update(_JOBS)
        .where(_JOBS.c.id.in_(select(locked.c.id)))
        .values(version=_JOBS.c.version + 1, change_seq=changes.next_change_seq())
        .cte("touched")
    )


def _locked_archives(joined: tuple[Any, Any], *columns: Any, where: Any = ()) -> CTE:
    """The archives of some items with their item's uuid, job and `columns`, locked in id
    order (so two tasks never deadlock); `joined`: a table and its join condition."""
    return (
        select(_ARCHIVES.c.id, _ITEMS.c.uuid, _ITEMS.c.job_id, *columns)
        .select_from(_ARCHIVES.join(_ITEMS, _ARCHIVES.c.item_id == _ITEMS.c.id).join(*joined))
        .where(*where)
        .order_by(_ARCHIVES.c.id)
        .with_for_update(of=_ARCHIVES)
        .cte("locked")
    )


def _start_statement() -> Select[Any]:
    locked = _locked_archives(
        (_JOBS, _ITEMS.c.job_id == _JOBS.c.id),
        _ITEMS.c.preview_url,
        _JOBS.c.public_id,
        where=[_ITEMS.c.uuid == any_(bindparam("uuids", type_=ARRAY(_ITEMS.c.uuid.type)))],
    )
    taken = (
        update(_ARCHIVES)
        .where(
            _ARCHIVES.c.id == locked.c.id,
            _ARCHIVES.c.state == PENDING,
            locked.c.preview_url != "",  # neither NULL nor empty: `not url`
        )
        .values(
            attempts=_ARCHIVES.c.attempts + 1,
            next_attempt_at=bindparam("leased_until", type_=UTCDateTime()),
        )
        .returning(_ARCHIVES.c.id, locked.c.uuid, locked.c.job_id, locked.c.preview_url)
        .returning(locked.c.public_id)
        .cte("taken")
    )
    # `attempts` is shown: every job with an archive taken changes.
    return (
        select(taken.c.uuid, taken.c.preview_url, taken.c.public_id)
        .order_by(taken.c.id)
        .add_cte(_touching(select(taken.c.job_id)))
    )


_START = _start_statement()


def _start_in_one_statement(
    connection: Connection, item_uuids: Sequence[str], *, now: datetime
) -> list[Attempt]:
    """`start_attempts` in one statement, committed as it returns."""
    rows = connection.execute(
        _START, {"uuids": list(item_uuids), "leased_until": now + LEASE}
    ).all()
    if len({row.public_id for row in rows}) == 1:
        logs.bind(job_id=rows[0].public_id)
    return [Attempt(uuid, url, f"{public_id}/{uuid}") for uuid, url, public_id in rows]


def _record_statement() -> Select[Any]:
    given = given_rows(
        {
            "uuid": _ITEMS.c.uuid.type,
            **{name: _ARCHIVES.c[name].type for name in _KEPT},
            "error": Text(),
            "transient": Boolean(),
        }
    )
    # The archive as it is once locked, to tell what changes; and what the task achieved.
    locked = _locked_archives(
        (given, given.c.uuid == _ITEMS.c.uuid),
        *(_ARCHIVES.c[name].label(f"was_{name}") for name in RECORDED_SHOWN),
        *(given.c[name] for name in (*_KEPT, "error", "transient")),
    )
    now = bindparam("now", type_=UTCDateTime())
    kept = locked.c.storage_key.is_not(None)
    retried = locked.c.transient & (_ARCHIVES.c.attempts < MAX_ATTEMPTS)
    # When each attempt count's retry is due: `retry_delay`'s, computed by the caller.
    dues = bindparam("due", type_=ARRAY(UTCDateTime()))
    due = Grouping(cast(dues, ARRAY(UTCDateTime())))[_ARCHIVES.c.attempts + 1]

    written = (
        update(_ARCHIVES)
        # What was kept is recorded whatever the archive's state; a failure only on a pending one.
        .where(_ARCHIVES.c.id == locked.c.id, or_(kept, _ARCHIVES.c.state == PENDING))
        .values({name: _case(kept, locked.c[name], _ARCHIVES.c[name]) for name in _KEPT})
        .values(
            state=_case(kept, ARCHIVED, _case(retried, _ARCHIVES.c.state, FAILED)),
            archived_at=_case(kept, now, _ARCHIVES.c.archived_at),
            last_error=_case(kept, None, locked.c.error),
            next_attempt_at=_case(kept, None, _case(retried, due, None)),
        )
        .returning(_ARCHIVES.c.id, _ARCHIVES.c.state, locked.c.job_id)
        .returning(
            or_(
                *(
                    locked.c[f"was_{name}"].is_distinct_from(_ARCHIVES.c[name])
                    for name in RECORDED_SHOWN
                )
            ).label("changed")
        )
        .cte("written")
    )
    return (
        select(locked.c.uuid, func.coalesce(written.c.state, locked.c.was_state))
        .select_from(locked.outerjoin(written, written.c.id == locked.c.id))
        .add_cte(_touching(select(written.c.job_id).where(written.c.changed)))
    )


def _case(condition: Any, then: Any, otherwise: Any) -> Any:
    return case((condition, then), else_=otherwise)


_RECORD = _record_statement()


def _record_in_one_statement(
    connection: Connection, outcomes: Mapping[str, Kept | Failed], *, now: datetime
) -> dict[str, str]:
    """`record_outcomes` in one statement, committed as it returns."""
    if not outcomes:
        return {}
    rows = []
    for item_uuid, outcome in outcomes.items():
        row: dict[str, Any] = dict.fromkeys((*_KEPT, "error", "transient"))
        if isinstance(outcome, Kept):
            fetched = outcome.fetched
            row |= {"storage_key": outcome.key, "sha256": fetched.sha256, "size": len(fetched.data)}
            row |= {"content_type": fetched.info.content_type}
            row |= {"width": fetched.info.width, "height": fetched.info.height}
        else:
            row |= {"error": outcome.reason[:500], "transient": outcome.transient}
        rows.append({"uuid": item_uuid, **row})
    given = rows_document(rows, list(rows[0]))
    due = [now + retry_delay(attempts) for attempts in range(MAX_ATTEMPTS)]
    found = {
        item_uuid: state
        for item_uuid, state in connection.execute(_RECORD, {ROWS: given, "now": now, "due": due})
    }
    return {
        item_uuid: found.get(item_uuid, ARCHIVED if isinstance(outcome, Kept) else FAILED)
        for item_uuid, outcome in outcomes.items()
    }


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

    Two transactions in all: one takes the attempts, one keeps what they achieved (on
    PostgreSQL each a single statement). A task that dies in between leaves its archives
    pending until their lease ends; then they are sent again.
    """
    if db.engine.dialect.name == "postgresql":
        with db.connection(writes=True) as connection:
            attempts = _start_in_one_statement(connection, item_uuids, now=clock())
    else:
        with db.transaction() as session:
            attempts = start_attempts(session, item_uuids, now=clock())
    outcomes = {
        attempt.item_uuid: _attempt(storage, http, attempt, max_bytes=max_bytes, timeout=timeout)
        for attempt in attempts
    }
    states: dict[str, str] = {}
    if outcomes and db.engine.dialect.name == "postgresql":
        with db.connection(writes=True) as connection:
            states = _record_in_one_statement(connection, outcomes, now=clock())
    elif outcomes:
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
