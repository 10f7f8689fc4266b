"""Width, height and type of the items of completed jobs: the upstream's media data.

What a task learned is written in one statement on PostgreSQL, committed as it returns: the
jobs' rows are locked (in id order) and their versions bumped before their items are written,
as every writer takes a job's row before its items'. SQLite keeps a transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Table, any_, bindparam, select, update
from sqlalchemy.dialects.postgresql import ARRAY

from webhook_app import changes
from webhook_app.infra.bulk import ROWS, given_rows, rows_document
from webhook_app.infra.db import Database
from webhook_app.models import Job, JobItem

_JOBS: Table = Job.__table__  # type: ignore[assignment]
_ITEMS: Table = JobItem.__table__  # type: ignore[assignment]


class Learned(NamedTuple):
    """What the upstream said of one item of a job."""

    job_id: int
    item_uuid: str
    width: int | None
    height: int | None
    media_type: str | None


_UNKNOWN = (
    select(_ITEMS.c.job_id, _ITEMS.c.uuid)
    .where(_ITEMS.c.job_id.in_(bindparam("jobs", expanding=True)), _ITEMS.c.width.is_(None))
    .order_by(_ITEMS.c.job_id, _ITEMS.c.position)
)


def unknown_items(db: Database, job_ids: Iterable[int]) -> list[tuple[int, str]]:
    """(job id, item uuid) of these jobs' items whose media data is not known yet."""
    with db.read() as session:
        rows = session.execute(_UNKNOWN, {"jobs": sorted(set(job_ids))}).all()
    return [(job_id, item_uuid) for job_id, item_uuid in rows]


_COLUMNS = ("width", "height", "media_type")


def _one_statement() -> Any:
    locked = (
        select(_JOBS.c.id)
        .where(_JOBS.c.id == any_(bindparam("jobs", type_=ARRAY(BigInteger()))))
        .order_by(_JOBS.c.id)
        .with_for_update(key_share=True)
        .cte("jobs_locked")
    )
    # A plain statement on items: the change is recorded on the jobs (webhook_app/changes.py).
    touched = (
        update(_JOBS)
        .where(_JOBS.c.id == locked.c.id)
        .values(version=_JOBS.c.version + 1, change_seq=changes.next_change_seq())
        .returning(_JOBS.c.id)
        .cte("touched")
    )
    given = given_rows(
        {"uuid": _ITEMS.c.uuid.type, **{name: _ITEMS.c[name].type for name in _COLUMNS}}
    )
    # An item is written once its job's row is locked: it is reached through `touched`.
    return (
        update(_ITEMS)
        .where(_ITEMS.c.uuid == given.c.uuid, _ITEMS.c.job_id == touched.c.id)
        .values({name: given.c[name] for name in _COLUMNS})
    )


_RECORD = _one_statement()
_RECORD_EACH = (
    update(_ITEMS)
    .where(_ITEMS.c.uuid == bindparam("item_uuid"))
    .values({name: bindparam(f"{name}_") for name in _COLUMNS})
)


def record(db: Database, learned: Sequence[Learned]) -> None:
    """Keep what was learned, and record it as a change of the items' jobs."""
    if not learned:
        return
    jobs = sorted({row.job_id for row in learned})
    if db.engine.dialect.name == "postgresql":
        given = rows_document(
            [{"uuid": row.item_uuid, **row._asdict()} for row in learned], ("uuid", *_COLUMNS)
        )
        with db.connection(writes=True) as connection:
            connection.execute(_RECORD, {"jobs": jobs, ROWS: given})
        return
    with db.transaction() as session:
        # The job's row first, as every writer takes it before its items.
        changes.touch(session, job_ids=jobs)
        session.connection().execute(
            _RECORD_EACH,
            [
                {"item_uuid": row.item_uuid, **{f"{n}_": getattr(row, n) for n in _COLUMNS}}
                for row in learned
            ],
        )
