"""Keeping each callback delivery as it arrived, and applying what it says."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, bindparam, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from webhook_app.depositphotos.kinds.image_generation import read_generation
from webhook_app.depositphotos.payloads import (
    PayloadError,
    ReportedFailure,
    decode_body,
    unwrap_envelope,
)
from webhook_app.infra.db import after_commit
from webhook_app.infra.queue import REFRESH_JOB
from webhook_app.models import Delivery, Job
from webhook_app.services.jobs import lock_job
from webhook_app.services.progress import NEEDS_CONFIRMATION, Applied, Outcome, apply_report

# Only these request headers are kept: enough to tell senders and encodings apart.
KEPT_HEADERS = ("content-type", "user-agent", "x-forwarded-for", "x-request-id")


@dataclass(frozen=True)
class Arrival:
    """A delivery as it reached the receiver."""

    body: bytes
    content_type: str | None
    headers: Mapping[str, str]
    source_addr: str | None


@dataclass(frozen=True)
class Received:
    job: Job
    outcome: Outcome
    duplicate: bool
    completed: bool
    detail: str | None = None


def receive_delivery(
    session: Session, public_id: str, arrival: Arrival, *, now: datetime, recheck_after: timedelta
) -> Received | None:
    """Keep the delivery and merge it into its job, in the caller's transaction."""
    job = lock_job(session, public_id=public_id)
    if job is None:
        return None
    applied = _apply(session, job, arrival, now=now, recheck_after=recheck_after)
    count = keep_delivery(session, job, arrival, applied, now=now)
    if count == 1 and applied.outcome in NEEDS_CONFIRMATION:
        after_commit(session, REFRESH_JOB, job.id)
    return Received(
        job=job,
        outcome=applied.outcome,
        duplicate=count > 1,
        completed=applied.completed,
        detail=applied.detail,
    )


def _apply(
    session: Session, job: Job, arrival: Arrival, *, now: datetime, recheck_after: timedelta
) -> Applied:
    try:
        report = read_generation(unwrap_envelope(decode_body(arrival.body, arrival.content_type)))
    except ReportedFailure as exc:
        return Applied(Outcome.UPSTREAM_FAILURE, detail=str(exc))
    except PayloadError as exc:
        return Applied(Outcome.UNPARSEABLE, detail=str(exc))
    # A repeated body merges to no change, so duplicates need no special path.
    return apply_report(
        session, job, report, source="callback", now=now, recheck_after=recheck_after
    )


def keep_delivery(
    session: Session, job: Job, arrival: Arrival, applied: Applied, *, now: datetime
) -> int:
    """Store the delivery, or count it again if this job already has the same body.

    Returns how many times this body has now been received.
    """
    fingerprint = hashlib.sha256(
        (arrival.content_type or "").encode() + b"\n" + arrival.body
    ).hexdigest()
    values = {
        "job_id": job.id,
        "fingerprint": fingerprint,
        "received_count": 1,
        "first_received_at": now,
        "last_received_at": now,
        "content_type": (arrival.content_type or "")[:200] or None,
        "headers": {k: v[:500] for k, v in arrival.headers.items() if k.lower() in KEPT_HEADERS},
        "body": arrival.body,
        "source_addr": (arrival.source_addr or "")[:64] or None,
        "outcome": applied.outcome.value,
        "detail": applied.detail,
    }
    # A plain statement on the transaction's connection: the job's own changes are flushed
    # with the commit, and the ORM has nothing to add to an upsert.
    connection = session.connection()
    return int(connection.execute(_upsert(connection.dialect.name), values).scalar_one())


@cache
def _upsert(dialect: str) -> Any:
    """The delivery upsert, built once per dialect; each delivery only binds its values."""
    table = cast(Table, Delivery.__table__)
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table).values(
        {
            column.name: bindparam(column.name, type_=column.type)
            for column in table.c
            if column.name != "id"
        }
    )
    return statement.on_conflict_do_update(
        index_elements=[table.c.job_id, table.c.fingerprint],
        set_={
            "received_count": table.c.received_count + 1,
            "last_received_at": statement.excluded.last_received_at,
        },
    ).returning(table.c.received_count)


def keep_unapplied(
    session: Session, public_id: str, arrival: Arrival, detail: str, *, now: datetime
) -> Job | None:
    """Keep a delivery whose merge failed unexpectedly, leaving the job untouched."""
    job = lock_job(session, public_id=public_id)
    if job is not None:
        keep_delivery(session, job, arrival, Applied(Outcome.ERROR, detail=detail), now=now)
        after_commit(session, REFRESH_JOB, job.id)
    return job


def count_deliveries(session: Session) -> int:
    """Every delivery answered 2xx, repeats included."""
    return int(session.scalar(func.coalesce(func.sum(Delivery.received_count), 0)) or 0)
