"""The changes feed: every job that changed since a cursor, in the order the changes were made.

A cursor is the position of the last change a reader has seen (`change_seq`, then the job's
id for the jobs one transaction changed together). A page reads forward from it along the
`(change_seq, id)` index, never past the horizon below which nothing can still commit (see
`webhook_app.changes`), so the cost of a page is the number of changes it returns,
whatever the size of the table.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, tuple_

from webhook_app.changes import change_horizon
from webhook_app.models import Job
from webhook_app.services import views
from webhook_app.services.jobs import InvalidField, filtered

NOW = "now"  # a cursor at the current end of the feed: only later changes
START = "0"  # a cursor before every change: every job, then its later changes
_LAST_ID = 2**63 - 1


@dataclass(frozen=True)
class Changes:
    jobs: Sequence[views.JobView]
    cursor: str  # pass it back for the changes after these
    more: bool  # more changes are there already: ask again at once


def encode(position: tuple[int, int]) -> str:
    raw = json.dumps({"after": list(position)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[int, int] | None:
    """The position a cursor names; None for NOW (resolved against the horizon)."""
    if cursor == NOW:
        return None
    if cursor == START:
        return (-1, 0)
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        seq, job_id = json.loads(base64.urlsafe_b64decode(padded.encode()))["after"]
    except (ValueError, KeyError, TypeError):
        raise InvalidField("changed_after", "is not a cursor this API returned") from None
    if not all(type(n) is int and -1 <= n <= _LAST_ID for n in (seq, job_id)):
        raise InvalidField("changed_after", "is not a cursor this API returned")
    return seq, job_id


def changes_since(
    connection: Connection,
    cursor: str,
    *,
    limit: int = 50,
    status: str | None = None,
    created_after: datetime | None = None,
    prompt_contains: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Changes:
    """The jobs changed after `cursor`, oldest change first, and the cursor after them.

    `metadata` keeps jobs whose metadata has every one of these keys with that value; it is
    applied to the changes read, so a page may hold fewer jobs than `limit` while `more` says
    the feed goes on.
    """
    after = decode(cursor)
    horizon: int = connection.execute(_HORIZON).scalar_one()
    if after is None:
        return Changes((), encode((horizon - 1, _LAST_ID)), False)
    query = (
        views.JOBS.add_columns(Job.change_seq)
        .where(tuple_(Job.change_seq, Job.id) > tuple_(*after), Job.change_seq < horizon)
        .order_by(Job.change_seq, Job.id)
        .limit(limit + 1)
    )
    rows = connection.execute(filtered(query, status, created_after, prompt_contains)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    # A short page read everything below the horizon: the next one starts there.
    position = (rows[-1].change_seq, rows[-1].id) if more else max(after, (horizon - 1, _LAST_ID))
    if metadata:
        rows = [row for row in rows if matches(row.meta, metadata)]
    return Changes(views.views_of_rows(connection, rows), encode(position), more)


_HORIZON = select(change_horizon())


def matches(meta: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    """Every wanted key is in the job's metadata with that value."""
    given = meta or {}
    return all(key in given and given[key] == value for key, value in wanted.items())
