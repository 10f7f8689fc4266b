"""Keeping each callback delivery as it arrived: one statement, nothing applied yet."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from webhook_app.infra.db import Database
from webhook_app.infra.statements import OneStatement
from webhook_app.models import Delivery, Job
from webhook_app.services.progress import Outcome

# Only these request headers are kept: enough to tell senders and encodings apart.
KEPT_HEADERS = ("content-type", "user-agent", "x-forwarded-for", "x-request-id")
# What a delivery is until an applier has merged it (services.applying gives the outcome).
PENDING = Outcome.PENDING.value


@dataclass(frozen=True)
class Arrival:
    """A delivery as it reached the receiver."""

    body: bytes
    content_type: str | None
    headers: Mapping[str, str]
    source_addr: str | None


def delivery_statement(db: Database) -> OneStatement:
    """The statement `store_delivery` runs on `db`: prepared once, by the receiver."""
    return db.statement(_upsert(db.engine.dialect.name))


def store_delivery(
    statement: OneStatement, public_id: str, arrival: Arrival, *, now: datetime
) -> int | None:
    """Keep the delivery for the job with this public id, or count it again if the job
    already has the same body: one statement (`delivery_statement`), which also finds the
    job, and is committed when this returns.

    Returns how many times this body has now been received, or None if there is no such job.
    """
    fingerprint = hashlib.sha256(
        (arrival.content_type or "").encode() + b"\n" + arrival.body
    ).hexdigest()
    values = {
        "public_id": public_id,
        "fingerprint": fingerprint,
        "received_count": 1,
        "first_received_at": now,
        "last_received_at": now,
        "content_type": (arrival.content_type or "")[:200] or None,
        "headers": {k: v[:500] for k, v in arrival.headers.items() if k.lower() in KEPT_HEADERS},
        "body": arrival.body,
        "source_addr": (arrival.source_addr or "")[:64] or None,
        "outcome": PENDING,
        "detail": None,
        "applied_at": None,
    }
    row = statement.first(values)
    return None if row is None else int(row[0])


@cache
def _upsert(dialect: str) -> Any:
    """INSERT ... SELECT the job's id ... ON CONFLICT count again, built once per dialect."""
    table = cast(Table, Delivery.__table__)
    jobs = cast(Table, Job.__table__)
    columns = [column for column in table.c if column.name not in ("id", "job_id")]
    found = select(
        jobs.c.id, *[bindparam(column.name, type_=column.type) for column in columns]
    ).where(jobs.c.public_id == bindparam("public_id"))
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table).from_select(["job_id", *[c.name for c in columns]], found)
    return statement.on_conflict_do_update(
        index_elements=[table.c.job_id, table.c.fingerprint],
        set_={
            "received_count": table.c.received_count + literal_column("1"),
            "last_received_at": statement.excluded.last_received_at,
        },
    ).returning(table.c.received_count)


def count_deliveries(session: Session) -> int:
    """Every delivery answered 2xx, repeats included."""
    return int(session.scalar(func.coalesce(func.sum(Delivery.received_count), 0)) or 0)
