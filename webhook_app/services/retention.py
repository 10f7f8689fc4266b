"""Pruning what only matters while a job runs: its deliveries' bodies and its events.

After RETENTION_DAYS from its end, a finished job keeps its row, its items and its archived
images; its deliveries and events go, a small batch per transaction so that no lock is held
long. A job that is not terminal is never touched.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from webhook_app.models import Delivery, Event, Job
from webhook_app.states import TERMINAL

BATCH = 200
TERMINAL_VALUES = sorted(status.value for status in TERMINAL)


def prune_batch(session: Session, *, now: datetime, retention: timedelta) -> int:
    """Prune the deliveries and events of up to BATCH jobs that ended before the retention.

    Returns how many jobs were pruned; 0 means nothing is left to do.
    """
    job_ids = list(
        session.scalars(
            select(Job.id)
            .where(
                Job.finished_at < now - retention,
                Job.status.in_(TERMINAL_VALUES),
                Job.pruned_at.is_(None),
            )
            .order_by(Job.finished_at)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
    )
    if not job_ids:
        return 0
    session.execute(delete(Delivery).where(Delivery.job_id.in_(job_ids)))
    session.execute(delete(Event).where(Event.job_id.in_(job_ids)))
    session.execute(update(Job).where(Job.id.in_(job_ids)).values(pruned_at=now))
    return len(job_ids)
