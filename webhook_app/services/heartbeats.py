"""What the running workers last said of themselves: alive, and whether they reach the broker.

Web processes cannot see the workers; without this, a worker that cannot reach its broker
leaves every job `queued` and nothing a user looks at says why. Each worker writes its row
every HEARTBEAT_INTERVAL seconds; /readyz and the dashboard read the recent ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from webhook_app.models import WorkerHeartbeat

HEARTBEAT_INTERVAL = 15.0
# A worker not heard from for this long is taken to be gone.
SILENT_AFTER = timedelta(seconds=4 * HEARTBEAT_INTERVAL)
OK = "ok"
BROKER_UNREACHABLE = "broker_unreachable"


@dataclass(frozen=True)
class WorkerState:
    name: str
    state: str
    detail: str | None
    broker: str
    seen_at: datetime


def record(
    session: Session,
    name: str,
    *,
    broker: str,
    state: str,
    detail: str | None,
    started_at: datetime,
    now: datetime,
) -> None:
    """Replace this worker's row (a plain delete and insert: the same on every database)."""
    session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.name == name))
    session.add(
        WorkerHeartbeat(
            name=name[:200],
            broker=broker[:200],
            state=state,
            detail=detail[:200] if detail else None,
            started_at=started_at,
            seen_at=now,
        )
    )


def forget(session: Session, name: str) -> None:
    """A worker that stops cleanly takes its row with it."""
    session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.name == name))


def recent(session: Session, *, now: datetime) -> list[WorkerState]:
    """The workers heard from lately, by name."""
    rows = session.execute(
        select(
            WorkerHeartbeat.name,
            WorkerHeartbeat.state,
            WorkerHeartbeat.detail,
            WorkerHeartbeat.broker,
            WorkerHeartbeat.seen_at,
        )
        .where(WorkerHeartbeat.seen_at >= now - SILENT_AFTER)
        .order_by(WorkerHeartbeat.name)
    )
    return [WorkerState(**row._mapping) for row in rows]


def summary(workers: list[WorkerState]) -> str:
    """One line for /readyz: "ok" when some worker is up and every one reaches the broker."""
    if not workers:
        silent = int(SILENT_AFTER.total_seconds())
        return f"no worker has reported in the last {silent} s: jobs wait queued"
    stuck = [w for w in workers if w.state != OK]
    if stuck:
        first = stuck[0]
        return (
            f"{len(stuck)} of {len(workers)} workers: {first.state} ({first.name}: {first.detail})"
        )
    return OK
