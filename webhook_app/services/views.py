"""What the query API shows of jobs, read with plain statements.

Reads are most of the API's traffic, and building ORM objects (identity map, attribute
instrumentation) cost more than the query: a job and its items come back as frozen
dataclasses instead. Writers keep using the ORM; `view_of` turns what they hold into a view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Select, bindparam, select
from sqlalchemy.orm import aliased

from webhook_app.models import ItemArchive, Job, JobItem


@dataclass(frozen=True, slots=True)
class ArchiveView:
    state: str
    sha256: str | None
    size: int | None
    content_type: str | None
    width: int | None
    height: int | None
    archived_at: datetime | None
    attempts: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class ItemView:
    uuid: str
    dp_item_id: int | None
    preview_url: str | None
    width: int | None
    height: int | None
    media_type: str | None
    archive: ArchiveView | None


@dataclass(frozen=True, slots=True)
class JobView:
    id: int
    public_id: str
    kind: str
    status: str
    prompt: str
    aspect_ratio: str | None
    medium: str | None
    meta: dict[str, Any] | None
    idempotency_key: str | None
    generation_uuid: str | None
    upstream_status: str | None
    purchase_status: str | None
    submission: str | None
    attempts: int
    last_error: dict[str, Any] | None
    retry_of: str | None  # the public id of the job this one retries
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None
    deadline_at: datetime
    version: int  # bumped by every change shown here: the answer's ETag
    items: tuple[ItemView, ...]


V = TypeVar("V", JobView, ItemView, ArchiveView)
_ORIGIN = aliased(Job)
_JOB_COLUMNS = (
    Job.id,
    Job.public_id,
    Job.kind,
    Job.status,
    Job.prompt,
    Job.aspect_ratio,
    Job.medium,
    Job.meta.label("meta"),  # rows are read by name: the column is called metadata
    Job.idempotency_key,
    Job.generation_uuid,
    Job.upstream_status,
    Job.purchase_status,
    Job.submission,
    Job.attempts,
    Job.last_error,
    _ORIGIN.public_id.label("retry_of"),
    Job.created_at,
    Job.updated_at,
    Job.submitted_at,
    Job.finished_at,
    Job.deadline_at,
    Job.version,
)
_ITEM_COLUMNS = (
    JobItem.uuid,
    JobItem.dp_item_id,
    JobItem.preview_url,
    JobItem.width,
    JobItem.height,
    JobItem.media_type,
)
_ARCHIVE_COLUMNS = (
    ItemArchive.state,
    ItemArchive.sha256,
    ItemArchive.size,
    ItemArchive.content_type,
    ItemArchive.width,
    ItemArchive.height,
    ItemArchive.archived_at,
    ItemArchive.attempts,
    ItemArchive.last_error,
)
# Jobs, each with the public id of the job it retries (most have none).
JOBS: Select[Any] = select(*_JOB_COLUMNS).outerjoin(_ORIGIN, _ORIGIN.id == Job.retry_of_id)
# The items of some jobs, in order, each with its archive if it has one.
_ITEMS = (
    select(JobItem.job_id, *_ITEM_COLUMNS, ItemArchive.id.label("archive_id"), *_ARCHIVE_COLUMNS)
    .outerjoin(ItemArchive, ItemArchive.item_id == JobItem.id)
    .where(JobItem.job_id.in_(bindparam("jobs", expanding=True)))
    .order_by(JobItem.job_id, JobItem.position)
)
# One job with its items and their archives, in one statement: a row per item (or one row).
_ONE = (
    select(*_JOB_COLUMNS, *_ITEM_COLUMNS, ItemArchive.id.label("archive_id"), *_ARCHIVE_COLUMNS)
    .select_from(Job)
    .outerjoin(_ORIGIN, _ORIGIN.id == Job.retry_of_id)
    .outerjoin(JobItem, JobItem.job_id == Job.id)
    .outerjoin(ItemArchive, ItemArchive.item_id == JobItem.id)
    .where(Job.public_id == bindparam("key"))
    .order_by(JobItem.position)
)
_JOB_FIELDS = len(_JOB_COLUMNS)


def job_view(connection: Connection, public_id: str) -> JobView | None:
    """One job by its public id, with its items."""
    if "\x00" in public_id:  # PostgreSQL text cannot hold it; no id contains it
        return None
    rows = connection.execute(_ONE, {"key": public_id}).all()
    if not rows:
        return None
    items = tuple(_item(row[_JOB_FIELDS:]) for row in rows if row.uuid is not None)
    return JobView(*(*rows[0][:_JOB_FIELDS], items))


def version_of(connection: Connection, public_id: str) -> int | None:
    """A job's version alone (what a conditional request compares), None if there is none."""
    if "\x00" in public_id:
        return None
    return connection.execute(_VERSION, {"key": public_id}).scalar()


_VERSION = select(Job.version).where(Job.public_id == bindparam("key"))


def job_views(connection: Connection, query: Select[Any]) -> list[JobView]:
    """The jobs a query built on JOBS selects, in its order, with their items."""
    return views_of_rows(connection, connection.execute(query).all())


def views_of_rows(connection: Connection, rows: Sequence[Any]) -> list[JobView]:
    """Rows a query built on JOBS returned (extra columns after JOBS' own are ignored), with
    their items read in one more statement."""
    if not rows:
        return []
    items: dict[int, list[ItemView]] = {row.id: [] for row in rows}
    for item in connection.execute(_ITEMS, {"jobs": list(items)}):
        items[item.job_id].append(_item(item[1:]))
    return [JobView(*(*row[:_JOB_FIELDS], tuple(items[row.id]))) for row in rows]


def _item(columns: Sequence[Any]) -> ItemView:
    """An item from its columns, then its archive's id and columns (None without one)."""
    count = len(_ITEM_COLUMNS)
    archive = None
    if columns[count] is not None:
        archive = ArchiveView(*columns[count + 1 :])
    return ItemView(*(*columns[:count], archive))


def view_of(job: Job) -> JobView:
    """The view of a job a writer holds (its items are loaded if they are not)."""
    origin = job.retry_of.public_id if job.retry_of_id and job.retry_of else None
    return _copy(JobView, job, retry_of=origin, items=tuple(_item_of(i) for i in job.items))


def _item_of(item: JobItem) -> ItemView:
    archive = item.archive
    return _copy(ItemView, item, archive=None if archive is None else _copy(ArchiveView, archive))


def _copy(view: type[V], source: object, **given: Any) -> V:
    """A view of `source`: its attributes of the same names, and what is given."""
    found = {f.name: getattr(source, f.name) for f in fields(view) if f.name not in given}
    return view(**found, **given)
