"""Each job's version, and the one order of changes the whole deployment shares.

Every visible change to a job, its items or their archives bumps the job's `version` (its
ETag) and gives it a new `change_seq` (its place in the changes feed: the writing
transaction's, shared by every job it changes). A session hook does it for whatever the ORM
flushes, inside the same UPDATE where the job itself is written; a writer that changes items
or archives with plain statements calls `touch`, or bumps the version in its own UPDATE of the
job with the transaction's `position` (the applier's batches).

A change is never skipped by a feed reader, even when transactions commit out of order:

- On PostgreSQL `change_seq` is the id of the writing transaction (`pg_current_xact_id()`),
  and a feed page only shows changes below its snapshot's `xmin`, the oldest transaction
  still running. Every transaction with a smaller id has ended, and every transaction that
  writes later has a larger id, so nothing can ever commit below a position a reader has
  passed. A long transaction delays the feed (its changes and those after it wait for it);
  it never makes the feed skip.
- On SQLite writers take turns (BEGIN IMMEDIATE holds the write lock for the whole
  transaction), so the next value, one more than the largest, is assigned in commit order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import BigInteger, Table, bindparam, event, select, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, UOWTransaction
from sqlalchemy.orm.base import PASSIVE_NO_INITIALIZE
from sqlalchemy.orm.util import identity_key
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from webhook_app.models import ItemArchive, Job, JobItem

# Columns nobody is shown: writing them is not a change of the job.
_HIDDEN = {
    Job: frozenset({"polls", "next_check_at", "pruned_at", "version", "change_seq"}),
    JobItem: frozenset(),
    ItemArchive: frozenset({"next_attempt_at", "storage_key"}),
}


class next_change_seq(FunctionElement[int]):
    """The position of a change made now, by this transaction."""

    type = BigInteger()
    inherit_cache = True
    name = "next_change_seq"


class change_horizon(FunctionElement[int]):
    """Every change below this position is committed or rolled back, for good."""

    type = BigInteger()
    inherit_cache = True
    name = "change_horizon"


_SQLITE_NEXT = "(SELECT COALESCE(MAX(change_seq), 0) + 1 FROM jobs)"


@compiles(next_change_seq)
@compiles(change_horizon)
def _sqlite(_element: Any, _compiler: SQLCompiler, **_kw: Any) -> str:
    return _SQLITE_NEXT


@compiles(next_change_seq, "postgresql")
def _transaction_id(_element: Any, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "CAST(CAST(pg_current_xact_id() AS text) AS bigint)"


@compiles(change_horizon, "postgresql")
def _snapshot_xmin(_element: Any, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS text) AS bigint)"


_JOBS: Table = Job.__table__  # type: ignore[assignment]
_TOUCH_JOBS = (
    update(_JOBS)
    .where(_JOBS.c.id.in_(bindparam("jobs", expanding=True)))
    .values(version=_JOBS.c.version + 1, change_seq=next_change_seq())
)
_TOUCH_ITEMS_JOBS = (
    update(_JOBS)
    .where(
        _JOBS.c.id.in_(
            select(JobItem.job_id).where(JobItem.id.in_(bindparam("items", expanding=True)))
        )
    )
    .values(version=_JOBS.c.version + 1, change_seq=next_change_seq())
)


def touch(session: Session, *, job_ids: Iterable[int] = (), item_ids: Iterable[int] = ()) -> None:
    """Record a change to these jobs (or to the jobs of these items) made by plain statements."""
    connection = session.connection()
    if jobs := sorted(set(job_ids)):
        connection.execute(_TOUCH_JOBS, {"jobs": jobs})
    if items := sorted(set(item_ids)):
        connection.execute(_TOUCH_ITEMS_JOBS, {"items": items})


def _changed(obj: Any) -> bool:
    state = obj.__dict__.get("_sa_instance_state")
    if state is None:
        return False
    # Only attributes set since the load are in committed_state: look at their history alone.
    set_since = state.committed_state.keys() & _SHOWN[type(obj)]
    # get_history, not state.attrs: that builds an object for every attribute of the model.
    return any(state.get_history(key, PASSIVE_NO_INITIALIZE).has_changes() for key in set_since)


# The columns whose change is a change of the job: what is not hidden.
_SHOWN = {
    model: frozenset(attr.key for attr in model.__mapper__.column_attrs) - hidden
    for model, hidden in _HIDDEN.items()
}


def _owner(obj: Any) -> tuple[int | None, int | None]:
    """(job id, item id) through which a changed item or archive reaches its job."""
    if isinstance(obj, JobItem):
        job_id = obj.job_id if obj.job_id is not None else getattr(obj.job, "id", None)
        return job_id, None
    item = obj.__dict__.get("item")  # loaded or set: no query
    if item is not None and item.job_id is not None:
        return item.job_id, None
    return None, obj.item_id


@event.listens_for(Session, "before_flush")
def _record_changes(session: Session, _flush: UOWTransaction, _instances: Any) -> None:
    """Bump the version and the position of every job whose flush changes what is shown."""
    # Once per transaction is enough: its changes become visible together, at its commit.
    done: set[object] = session.info.setdefault(_VERSIONED, set())
    bumped: set[Job] = set()
    job_ids: set[int] = set()
    item_ids: set[int] = set()
    for obj in session.new:
        if isinstance(obj, Job):
            obj.version = 1
            obj.change_seq = position(session)
            done.add(obj)
        elif isinstance(obj, JobItem | ItemArchive):
            job_id, item_id = _owner(obj)
            job_ids.update(() if job_id is None else (job_id,))
            item_ids.update(() if item_id is None else (item_id,))
    for obj in [*session.dirty, *session.deleted]:
        if isinstance(obj, Job):
            if obj not in session.deleted and _changed(obj):
                bumped.add(obj)
        elif isinstance(obj, JobItem | ItemArchive) and (obj in session.deleted or _changed(obj)):
            job_id, item_id = _owner(obj)
            job_ids.update(() if job_id is None else (job_id,))
            item_ids.update(() if item_id is None else (item_id,))
    elsewhere = set()
    for job_id in job_ids:
        job = session.identity_map.get(identity_key(Job, job_id))
        if isinstance(job, Job):
            bumped.add(job)
        elif job_id not in done:
            elsewhere.add(job_id)
    for job in bumped - done:
        done.add(job)
        if job.id is not None:
            done.add(job.id)
        # The job's own UPDATE carries both: no statement of its own. Writers of a job hold
        # its row lock, so the version read here is the one they are replacing.
        job.version = job.version + 1
        job.change_seq = position(session)
    if elsewhere or item_ids:
        done.update(elsewhere)
        touch(session, job_ids=elsewhere, item_ids=item_ids)


_VERSIONED = "webhook_app.versioned"
_POSITION = "webhook_app.change_position"
_NEXT = select(next_change_seq())


def position(session: Session) -> int:
    """The transaction's place in the change order, read once: every job it changes shares
    it (readers order ties by id). A plain value, so the jobs of a batch are written in one
    executemany rather than a statement each."""
    if _POSITION not in session.info:
        session.info[_POSITION] = session.connection().execute(_NEXT).scalar_one()
    return int(session.info[_POSITION])


def inserted(session: Session, job: Job) -> None:
    """Record a job a plain statement inserted at version 1 and at `position`: what the
    transaction does to it afterwards is part of its creation, as for one the ORM inserts."""
    session.info.setdefault(_VERSIONED, set()).update((job, job.id))
    session.info.setdefault(_POSITION, job.change_seq)


def known_position(session: Session, value: int) -> None:
    """The transaction's position, read by the caller along with something else (a
    `next_change_seq()` in its own query): `position` need not read it."""
    session.info.setdefault(_POSITION, int(value))


@event.listens_for(Session, "after_transaction_end")
def _transaction_ended(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(_VERSIONED, None)
        session.info.pop(_POSITION, None)


@event.listens_for(Session, "after_soft_rollback")
def _rolled_back(session: Session, _previous: Any) -> None:
    # A savepoint rolled back may have taken a bump with it: bump again rather than miss one.
    session.info.pop(_VERSIONED, None)
