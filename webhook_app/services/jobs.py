"""Creating jobs and reading them back."""

from __future__ import annotations

import base64
import hashlib
import json
import unicodedata
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Table, bindparam, func, insert, literal, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, lazyload
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from webhook_app import changes
from webhook_app.depositphotos.kinds.image_generation import ASPECT_RATIOS, MAX_PROMPT, MEDIUMS
from webhook_app.infra import logs
from webhook_app.infra.db import after_commit
from webhook_app.infra.queue import SUBMIT_JOB
from webhook_app.models import (
    Delivery,
    Event,
    Job,
    JobItem,
    is_public_id,
    new_public_id,
    utcnow,
)
from webhook_app.services import budgets as budgets_service
from webhook_app.services import views
from webhook_app.states import JobStatus

MAX_METADATA_BYTES = 8192
MAX_PAGE = 200
MAX_BODY_DEPTH = 32


class InvalidField(ValueError):
    """A field of a request is wrong; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _unstorable(char: str) -> bool:
    # Control characters (PostgreSQL refuses NUL) and lone surrogates (not encodable as UTF-8).
    category = unicodedata.category(char)
    return (category == "Cc" and char not in "\t\n\r") or category == "Cs"


class IdempotencyConflict(ValueError):
    """The idempotency key was used before for a different request."""


@dataclass(frozen=True)
class JobRequest:
    prompt: str
    aspect_ratio: str | None = None
    medium: str | None = None
    metadata: Mapping[str, Any] | None = field(default=None, compare=True)

    @classmethod
    def from_mapping(cls, data: Any) -> JobRequest:
        """Validate as the upstream would, naming the first bad field."""
        if not isinstance(data, Mapping):
            raise InvalidField("body", "must be a JSON object")
        unknown = set(data) - {"prompt", "aspect_ratio", "medium", "metadata"}
        if unknown:
            raise InvalidField(sorted(unknown)[0], "is not a known field")
        prompt = data.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidField("prompt", "is required and must be a non-empty string")
        if "\x00" in prompt:
            raise InvalidField("prompt", "must not contain NUL characters")
        if len(prompt) > MAX_PROMPT:
            raise InvalidField("prompt", f"must be at most {MAX_PROMPT} characters")
        if any(_unstorable(c) for c in prompt):
            raise InvalidField("prompt", "must not contain control characters")
        aspect_ratio = data.get("aspect_ratio")
        if aspect_ratio is not None and aspect_ratio not in ASPECT_RATIOS:
            raise InvalidField("aspect_ratio", f"must be one of {', '.join(ASPECT_RATIOS)}")
        medium = data.get("medium")
        if medium is not None and medium not in MEDIUMS:
            raise InvalidField("medium", f"must be one of {', '.join(MEDIUMS)}")
        metadata = data.get("metadata")
        if metadata is not None:
            if not isinstance(metadata, Mapping):
                raise InvalidField("metadata", "must be a JSON object")
            if len(json.dumps(metadata)) > MAX_METADATA_BYTES:
                raise InvalidField("metadata", f"must be at most {MAX_METADATA_BYTES} bytes")
            if holds_nul(metadata):
                raise InvalidField("metadata", "must not contain NUL characters")
        return cls(prompt=prompt, aspect_ratio=aspect_ratio, medium=medium, metadata=metadata)

    def matches(self, job: Job) -> bool:
        return (job.prompt, job.aspect_ratio, job.medium, job.meta) == (
            self.prompt,
            self.aspect_ratio,
            self.medium,
            dict(self.metadata) if self.metadata else None,
        )


def holds_nul(value: Any) -> bool:
    """Whether a JSON value has a NUL character anywhere (PostgreSQL cannot store one)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(holds_nul(k) or holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_nul(v) for v in value)
    return False


def create_job(
    session: Session,
    request: JobRequest,
    *,
    now: datetime,
    deadline: timedelta,
    idempotency_key: str | None = None,
    source: str = "api",
    budgets: Sequence[budgets_service.Budget] = (),
) -> tuple[Job, bool]:
    """Insert a queued job, or return the one this idempotency key already made.

    A new job is counted against `budgets` (BudgetExceeded when one is used up); a replay is not.
    """
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 200:
        raise InvalidField("Idempotency-Key", "must be 1 to 200 characters")
    if idempotency_key is not None and "\x00" in idempotency_key:
        raise InvalidField("Idempotency-Key", "must not contain NUL characters")
    fields = {
        "public_id": new_public_id(),
        "prompt": request.prompt,
        "aspect_ratio": request.aspect_ratio,
        "medium": request.medium,
        "meta": dict(request.metadata) if request.metadata else None,
        "idempotency_key": idempotency_key,
        "status": JobStatus.QUEUED.value,
        "created_at": now,
        "updated_at": now,
        "deadline_at": now + deadline,
        "attempts": 0,
        "polls": 0,
    }
    if idempotency_key is None:
        return _created(session, _insert(session, fields, budgets, now, source)), True
    existing = session.scalar(select(Job).where(Job.idempotency_key == idempotency_key))
    if existing is not None:
        # A replay is answered without counting, even once the budget is used up.
        if not request.matches(existing):
            raise IdempotencyConflict(idempotency_key)
        return existing, False
    try:
        # The unique key settles a race between two requests with the same key; what was
        # counted for the loser is rolled back with its savepoint.
        with session.begin_nested():
            job = _insert(session, fields, budgets, now, source)
    except IntegrityError:
        existing = session.scalar(select(Job).where(Job.idempotency_key == idempotency_key))
        if existing is None:
            raise
        if not request.matches(existing):
            raise IdempotencyConflict(idempotency_key) from None
        return existing, False
    return _created(session, job), True


def _insert(
    session: Session,
    fields: dict[str, Any],
    budgets: Sequence[budgets_service.Budget],
    now: datetime,
    source: str,
) -> Job:
    """Count a new job against the budgets, insert it and its first event."""
    if session.get_bind().dialect.name == "postgresql":
        job = _insert_in_one_statement(session, fields, budgets, now, source)
    else:
        budgets_service.charge(session, budgets, now=now)
        job = Job(**fields)
        session.add(job)
        session.flush()
        session.add(Event(job_id=job.id, at=now, source=source, to_status=job.status))
    # A new job has no items: showing it reads none.
    set_committed_value(job, "items", [])
    return job


def _insert_in_one_statement(
    session: Session,
    fields: dict[str, Any],
    budgets: Sequence[budgets_service.Budget],
    now: datetime,
    source: str,
) -> Job:
    """The budgets' counts, the job and its event in one statement: the job is inserted only
    if every budget counted it, at version 1 and at this transaction's change position."""
    values: dict[str, Any] = {
        name: literal(value, Job.__mapper__.columns[name].type)
        for name, value in {**_SCALAR_DEFAULTS, **fields}.items()
    }
    values.update(version=literal(1), change_seq=changes.next_change_seq())
    rows = select(*values.values())
    counting = budgets_service.counting(budgets, now=now, dialect="postgresql")
    if counting is None:  # no budget, or none that could count it
        budgets_service.refuse_uncounted(budgets, (), now=now)
    else:
        counted = counting.cte("counted")
        rows = rows.where(
            select(func.count()).select_from(counted).scalar_subquery() == len(budgets)
        )
    created = (
        insert(Job)
        .from_select([getattr(Job, name) for name in values], rows, include_defaults=False)
        .returning(*_JOBS.c)
        .cte("created")
    )
    noted = insert(Event).from_select(
        ["job_id", "at", "source", "to_status"],
        select(created.c.id, literal(now, _EVENTS.c.at.type), literal(source), created.c.status),
    )
    loaded = select(Job).options(lazyload(Job.items))
    if counting is None:
        statement = select(created).add_cte(noted.cte("noted"))
        job = session.scalars(loaded.from_statement(statement)).one()
    else:
        # One row even when the job was refused: it names the budgets that counted it.
        tally = select(func.array_agg(counted.c.budget).label("counted")).subquery("tally")
        statement = (
            select(created, tally.c.counted)
            .select_from(tally.outerjoin(created, true()))
            .add_cte(noted.cte("noted"))
        )
        job, names = session.execute(
            loaded.add_columns(tally.c.counted).from_statement(statement)
        ).one()
        if job is None:
            budgets_service.refuse_uncounted(budgets, names or (), now=now)
    changes.inserted(session, job)
    return job


def _created(session: Session, job: Job) -> Job:
    after_commit(session, SUBMIT_JOB, job.id, if_unsent=partial(mark_not_enqueued, job_id=job.id))
    return job


_JOBS: Table = Job.__table__  # type: ignore[assignment]
_EVENTS: Table = Event.__table__  # type: ignore[assignment]
# An INSERT inside a WITH gets none of the columns' Python defaults: the plain ones are given.
_SCALAR_DEFAULTS = {
    name: column.default.arg
    for name, column in Job.__mapper__.columns.items()
    if isinstance(column.default, ScalarElementColumnDefault)
}

NOT_ENQUEUED = "not_enqueued"


def mark_not_enqueued(session: Session, *, job_id: int) -> None:
    """The broker refused the job's submission task: say so on the queued job.

    Reconciliation enqueues it again after RESUBMIT_QUEUED_AFTER; the claim clears this.
    """
    error = {
        "kind": NOT_ENQUEUED,
        "code": None,
        "exception": None,
        "message": "the broker could not be reached; the job is enqueued again by "
        "reconciliation once it can be",
        "at": utcnow().isoformat(),
    }
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
        .values(last_error=error)
    )
    changes.touch(session, job_ids=[job_id])  # a visible change: tools watching see it


def lock_job(
    session: Session, *, public_id: str | None = None, job_id: int | None = None
) -> Job | None:
    """Load a job with a row lock, so concurrent writers to it take turns.

    Its items are read only if used, and only once the lock is held: a read in the same
    statement would see them as they were before the previous holder of the lock committed.
    """
    if public_id:
        job = session.scalar(_LOCK_BY_PUBLIC_ID, {"key": public_id})
    else:
        job = session.scalar(_LOCK_BY_ID, {"key": job_id})
    if job is not None:
        logs.bind(job_id=job.public_id)  # every later line of this request or task names it
    return job


def get_job(session: Session, public_id: str) -> Job | None:
    """A job by its public id; its items are read only if used (the query API reads views)."""
    if "\x00" in public_id:  # PostgreSQL text cannot hold it; no id contains it
        return None
    return session.scalar(_GET, {"key": public_id})


# Built once: these run on every callback and every read of one job.
_LOCKED = (
    select(Job)
    # NO KEY UPDATE: writers of a job take turns, and a delivery stored meanwhile (its
    # insert takes a key-share lock on the job) does not wait for them.
    .with_for_update(of=Job, key_share=True)
    .options(lazyload(Job.items).joinedload(JobItem.archive))  # one query for both, when used
)
_LOCK_BY_PUBLIC_ID = _LOCKED.where(Job.public_id == bindparam("key"))
_LOCK_BY_ID = _LOCKED.where(Job.id == bindparam("key"))
_GET = select(Job).where(Job.public_id == bindparam("key")).options(lazyload(Job.items))


def status_of(session: Session, public_id: str) -> str | None:
    """The job's status alone (a cheap read for waiting), or None if there is no such job."""
    if "\x00" in public_id:
        return None
    return session.scalar(select(Job.status).where(Job.public_id == public_id))


@dataclass(frozen=True)
class Page:
    jobs: Sequence[views.JobView]
    next_cursor: str | None
    tag: str = ""  # names this page's jobs at their versions: the list's ETag
    unchanged: bool = False  # the caller knew the page by its tag: its jobs were not read


def encode_cursor(job_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": job_id}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))["before"]
    except (ValueError, KeyError, TypeError):
        raise InvalidField("cursor", "is not a cursor this API returned") from None
    if not isinstance(value, int):
        raise InvalidField("cursor", "is not a cursor this API returned")
    return value


def list_jobs(
    session: Session,
    *,
    status: str | None = None,
    created_after: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
    prompt_contains: str | None = None,
    known: Container[str] = (),
) -> Page:
    """Newest first. The cursor is the last id seen, so new jobs never shift later pages.

    When the page's tag is among `known`, its items are not read and nothing is returned.
    """
    query = views.JOBS.order_by(Job.id.desc()).limit(limit + 1)
    query = filtered(query, status, created_after, prompt_contains)
    if cursor is not None:
        query = query.where(Job.id < decode_cursor(cursor))
    connection = session.connection()
    rows = connection.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].id) if more else None
    tag = page_tag(rows, next_cursor)
    if tag in known:
        return Page((), next_cursor, tag, unchanged=True)
    return Page(views.views_of_rows(connection, rows), next_cursor, tag)


def page_tag(rows: Sequence[Any], next_cursor: str | None) -> str:
    """Which jobs, at which versions: any change to one of them, or to the page, changes it."""
    digest = hashlib.blake2b(digest_size=12)
    for row in rows:
        digest.update(b"%d:%d;" % (row.id, row.version))
    digest.update((next_cursor or "").encode())
    return digest.hexdigest()


MAX_BATCH = 200


def jobs_by_id(
    session: Session, public_ids: Sequence[str]
) -> tuple[list[views.JobView], list[str]]:
    """The jobs named, in the order asked (each once), and the ids no job has."""
    wanted = list(dict.fromkeys(public_ids))
    keys = [key for key in wanted if is_public_id(key)]
    query = views.JOBS.where(Job.public_id.in_(keys))
    found = (
        {job.public_id: job for job in views.job_views(session.connection(), query)} if keys else {}
    )
    return [found[key] for key in wanted if key in found], [k for k in wanted if k not in found]


def filtered(
    query: Any, status: str | None, created_after: datetime | None, prompt_contains: str | None
) -> Any:
    if status is not None:
        query = query.where(Job.status == status)
    if created_after is not None:
        query = query.where(Job.created_at > created_after)
    if prompt_contains:
        if "\x00" in prompt_contains:
            raise InvalidField("q", "must not contain NUL characters")
        query = query.where(Job.prompt.icontains(prompt_contains, autoescape=True))
    return query


def count_by_status(
    session: Session, *, created_after: datetime | None = None, prompt_contains: str | None = None
) -> dict[str, int]:
    """How many jobs are in each status (every status named, zero included)."""
    query = filtered(
        select(Job.status, func.count()).group_by(Job.status), None, created_after, prompt_contains
    )
    counts = {status.value: 0 for status in JobStatus}
    counts.update({status: number for status, number in session.execute(query).all()})
    return counts


def deliveries_of(session: Session, job: views.JobView) -> Sequence[Delivery]:
    return session.scalars(
        select(Delivery).where(Delivery.job_id == job.id).order_by(Delivery.id)
    ).all()


def events_of(session: Session, job: views.JobView) -> Sequence[Event]:
    return session.scalars(select(Event).where(Event.job_id == job.id).order_by(Event.id)).all()
