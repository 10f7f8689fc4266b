"""What the query API shows of jobs, read with plain statements.

Reads are most of the API's traffic, and building ORM objects (identity map, attribute
instrumentation) cost more than the query: a job and its items come back as frozen
dataclasses instead. Writers keep using the ORM; `view_of` turns what they hold into a view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from operator import itemgetter
from typing import Any, TypeVar

from sqlalchemy import Connection, RowMapping, Select, bindparam, select
from sqlalchemy.orm import aliased

from webhook_app import shapes
from webhook_app.models import ItemArchive, Job, JobItem


@dataclass(frozen=True, slots=True)
class ArchiveView:
    state: shapes.ArchiveState
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
    status: shapes.Status
    prompt: str
    aspect_ratio: str | None
    medium: str | None
    meta: dict[str, Any] | None
    idempotency_key: str | None
    generation_uuid: str | None
    upstream_status: str | None
    purchase_status: str | None
    submission: shapes.Submission | None
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


def _columns(view: type[V], model: type[Any], prefix: str = "", **named: Any) -> dict[str, Any]:
    """The column read into each field of `view`, in its order, by the name it is given: the
    field's, after `prefix`. Each is `model`'s attribute of the field's name unless `named`
    gives another. Fields holding other views are left out."""
    columns = {}
    for f in fields(view):
        if f.name in ("items", "archive"):
            continue
        column = named[f.name] if f.name in named else getattr(model, f.name)
        columns[prefix + f.name] = column.label(prefix + f.name) if prefix else column
    return columns


_JOB_COLUMNS = _columns(
    JobView,
    Job,
    meta=Job.meta.label("meta"),  # the column is called metadata
    retry_of=_ORIGIN.public_id.label("retry_of"),
)
_ITEM_COLUMNS = _columns(ItemView, JobItem)
# Named apart from the item's (and the job's) width, height, attempts and last_error.
_ARCHIVE_COLUMNS = _columns(ArchiveView, ItemArchive, prefix="archive_")
# Each reads a row's values by name, in the order of its view's fields.
_job_values = itemgetter(*_JOB_COLUMNS)
_item_values = itemgetter(*_ITEM_COLUMNS)
_archive_values = itemgetter(*_ARCHIVE_COLUMNS)

# Jobs, each with the public id of the job it retries (most have none).
JOBS: Select[Any] = select(*_JOB_COLUMNS.values()).outerjoin(_ORIGIN, _ORIGIN.id == Job.retry_of_id)
# The items of some jobs, in order, each with its archive if it has one.
_ITEMS = (
    select(
        JobItem.job_id,
        *_ITEM_COLUMNS.values(),
        ItemArchive.id.label("archive_id"),
        *_ARCHIVE_COLUMNS.values(),
    )
    .outerjoin(ItemArchive, ItemArchive.item_id == JobItem.id)
    .where(JobItem.job_id.in_(bindparam("jobs", expanding=True)))
    .order_by(JobItem.job_id, JobItem.position)
)
# One job with its items and their archives, in one statement: a row per item (or one row).
_ONE = (
    select(
        *_JOB_COLUMNS.values(),
        *_ITEM_COLUMNS.values(),
        ItemArchive.id.label("archive_id"),
        *_ARCHIVE_COLUMNS.values(),
    )
    .select_from(Job)
    .outerjoin(_ORIGIN, _ORIGIN.id == Job.retry_of_id)
    .outerjoin(JobItem, JobItem.job_id == Job.id)
    .outerjoin(ItemArchive, ItemArchive.item_id == JobItem.id)
    .where(Job.public_id == bindparam("key"))
    .order_by(JobItem.position)
)


def job_view(connection: Connection, public_id: str) -> JobView | None:
    """One job by its public id, with its items."""
    if "\x00" in public_id:  # PostgreSQL text cannot hold it; no id contains it
        return None
    rows = connection.execute(_ONE, {"key": public_id}).all()
    if not rows:
        return None
    items = tuple(_item(row._mapping) for row in rows if row.uuid is not None)
    return _job(rows[0]._mapping, items)


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
        items[item.job_id].append(_item(item._mapping))
    return [_job(row._mapping, tuple(items[row.id])) for row in rows]


def _job(row: RowMapping, items: tuple[ItemView, ...]) -> JobView:
    return JobView(*(*_job_values(row), items))


def _item(row: RowMapping) -> ItemView:
    """An item from a row holding its columns and its archive's (all None without one)."""
    archive = None if row["archive_id"] is None else ArchiveView(*_archive_values(row))
    return ItemView(*(*_item_values(row), archive))


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
