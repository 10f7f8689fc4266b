"""Retention and worker heartbeats, on SQLite and PostgreSQL built by Alembic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.common.factories import envelope, generation
from webhook_app.models import Delivery, Event, Job, JobItem, utcnow
from webhook_app.services import heartbeats, retention
from webhook_app.states import JobStatus

# Long ago, so that no job other tests left in the database is old enough to be pruned.
NOW = datetime(2001, 3, 1, tzinfo=UTC)


def make_job(session: Session, status: JobStatus, ended_days_ago: float | None) -> Job:
    now = NOW
    job = Job(
        prompt=f"{status.value} job",
        status=status.value,
        created_at=now - timedelta(days=40),
        updated_at=now,
        deadline_at=now,
        finished_at=None if ended_days_ago is None else now - timedelta(days=ended_days_ago),
    )
    session.add(job)
    session.flush()
    session.add(JobItem(job_id=job.id, position=0, uuid=f"item-{job.id}"))
    session.add(Event(job_id=job.id, source="callback", to_status=job.status))
    body = envelope(generation("final"))
    session.add(Delivery(job_id=job.id, fingerprint=f"fp-{job.id}", body=body, outcome="applied"))
    session.flush()
    return job


def kept(session: Session, job: Job) -> tuple[int, int, int]:
    count = func.count()
    return (
        session.scalar(select(count).select_from(Delivery).where(Delivery.job_id == job.id)) or 0,
        session.scalar(select(count).select_from(Event).where(Event.job_id == job.id)) or 0,
        session.scalar(select(count).select_from(JobItem).where(JobItem.job_id == job.id)) or 0,
    )


def test_only_jobs_that_ended_before_the_retention_lose_deliveries_and_events(
    session: Session,
) -> None:
    old = [make_job(session, status, 31) for status in (JobStatus.COMPLETED, JobStatus.FAILED)]
    recent = make_job(session, JobStatus.COMPLETED, 3)
    # Not terminal, whatever its timestamps say: never touched.
    running = make_job(session, JobStatus.PROCESSING, 31)
    never_ended = make_job(session, JobStatus.QUEUED, None)
    now = NOW

    pruned = retention.prune_batch(session, now=now, retention=timedelta(days=30))

    assert pruned == 2
    for job in old:
        assert kept(session, job) == (0, 0, 1)  # the job and its items stay
        session.refresh(job)
        assert job.pruned_at is not None
    for job in (recent, running, never_ended):
        assert kept(session, job) == (1, 1, 1)
    # Done once: a second run finds nothing left.
    assert retention.prune_batch(session, now=now, retention=timedelta(days=30)) == 0


def test_pruning_goes_in_bounded_batches(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "BATCH", 2)
    jobs = [make_job(session, JobStatus.COMPLETED, 40) for _ in range(5)]
    now, keep = NOW, timedelta(days=30)
    batches = []
    while done := retention.prune_batch(session, now=now, retention=keep):
        batches.append(done)
    assert batches == [2, 2, 1]
    assert all(kept(session, job) == (0, 0, 1) for job in jobs)


def test_readiness_tells_whether_the_workers_reach_their_broker(session: Session) -> None:
    now = utcnow()
    assert heartbeats.summary(heartbeats.recent(session, now=now)).startswith("no worker")
    for name, state, detail in (
        ("celery@a (pid 1)", heartbeats.OK, None),
        ("celery@b (pid 2)", heartbeats.BROKER_UNREACHABLE, "OperationalError: refused"),
    ):
        heartbeats.record(
            session,
            name,
            broker="redis://r:6379/0",
            state=state,
            detail=detail,
            started_at=now,
            now=now,
        )
    session.flush()
    summary = heartbeats.summary(heartbeats.recent(session, now=now))
    assert summary == (
        "1 of 2 workers: broker_unreachable (celery@b (pid 2): OperationalError: refused)"
    )
    # The same worker reporting again replaces its row; one that stopped is forgotten.
    heartbeats.record(
        session,
        "celery@b (pid 2)",
        broker="redis://r:6379/0",
        state=heartbeats.OK,
        detail=None,
        started_at=now,
        now=now,
    )
    heartbeats.forget(session, "celery@a (pid 1)")
    session.flush()
    assert heartbeats.summary(heartbeats.recent(session, now=now)) == "ok"
    # A worker that fell silent ages out.
    later = now + heartbeats.SILENT_AFTER + timedelta(seconds=1)
    assert heartbeats.recent(session, now=later) == []
