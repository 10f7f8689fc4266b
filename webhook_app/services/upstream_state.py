"""The pause on refused credentials, shared by every worker through the database.

When the upstream refuses the API key or the login, no job is failed for it: submissions
stop (jobs wait `queued`, their last error saying why) and one probe at a time, with a
growing interval, logs in again. When a probe is accepted the pause ends and every waiting
job is sent again. Each change of state is one conditional UPDATE, so exactly one worker
sees it change, logs it, and counts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from webhook_app.models import UpstreamState

NAME = "depositphotos"
PROBE_LEASE = timedelta(seconds=60)


@dataclass(frozen=True)
class Pause:
    since: datetime
    reason: dict[str, Any]
    next_probe_at: datetime | None
    probes_failed: int

    def as_json(self) -> dict[str, Any]:
        return {
            "paused": True,
            "since": self.since.isoformat(),
            "reason": self.reason,
            "next_probe_at": self.next_probe_at.isoformat() if self.next_probe_at else None,
            "probes_failed": self.probes_failed,
        }


def ensure_row(session: Session) -> None:
    """The upstream's row, made by whoever needs it first (a race is settled by the key)."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(UpstreamState)
        .values(name=NAME, probe_failures=0, next_call_at=0.0, slow_until=0.0)
        .on_conflict_do_nothing(index_elements=["name"])
    )


# What a pause is read from; a reader of other rows may read them along (an outer join).
PAUSE_COLUMNS = (
    UpstreamState.paused_since,
    UpstreamState.pause_reason,
    UpstreamState.probe_at,
    UpstreamState.probe_failures,
)


def current_pause(session: Session) -> Pause | None:
    row = session.execute(select(*PAUSE_COLUMNS).where(UpstreamState.name == NAME)).first()
    return None if row is None else pause_of(row)


def pause_of(row: Any) -> Pause | None:
    """The pause a row read with PAUSE_COLUMNS describes, if it is one."""
    if row.paused_since is None:
        return None
    return Pause(row.paused_since, row.pause_reason or {}, row.probe_at, row.probe_failures)


def pause(session: Session, reason: dict[str, Any], *, now: datetime, first_probe: float) -> bool:
    """Stop submissions; True when this call is the one that paused them."""
    ensure_row(session)
    changed = session.execute(
        update(UpstreamState)
        .where(UpstreamState.name == NAME, UpstreamState.paused_since.is_(None))
        .values(
            paused_since=now,
            pause_reason=reason,
            probe_at=now + timedelta(seconds=first_probe),
            probe_failures=0,
            probe_lease_until=None,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(cast(CursorResult[Any], changed).rowcount)


def take_probe(session: Session, *, now: datetime) -> bool:
    """True for the one caller that may probe now (the probe is due and nobody holds it)."""
    taken = session.execute(
        update(UpstreamState)
        .where(
            UpstreamState.name == NAME,
            UpstreamState.paused_since.is_not(None),
            UpstreamState.probe_at <= now,
            UpstreamState.probe_lease_until.is_(None) | (UpstreamState.probe_lease_until < now),
        )
        .values(probe_lease_until=now + PROBE_LEASE)
        .execution_options(synchronize_session=False)
    )
    return bool(cast(CursorResult[Any], taken).rowcount)


def probe_failed(session: Session, *, now: datetime, base: float, cap: float) -> datetime | None:
    """Still refused: the next probe waits twice as long (up to `cap`). Its time, or None."""
    row = session.scalar(select(UpstreamState).where(UpstreamState.name == NAME).with_for_update())
    if row is None or row.paused_since is None:
        return None
    row.probe_failures += 1
    row.probe_at = now + timedelta(seconds=min(cap, base * 2**row.probe_failures))
    row.probe_lease_until = None
    return row.probe_at


def resume(session: Session) -> bool:
    """The credentials were accepted: True when this call is the one that ended the pause."""
    changed = session.execute(
        update(UpstreamState)
        .where(UpstreamState.name == NAME, UpstreamState.paused_since.is_not(None))
        .values(
            paused_since=None,
            pause_reason=None,
            probe_at=None,
            probe_failures=0,
            probe_lease_until=None,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(cast(CursorResult[Any], changed).rowcount)
