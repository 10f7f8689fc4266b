"""What reconciliation decides, against the real database."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from tests.common.factories import T0, generation, make_job
from webhook_app.depositphotos.kinds.image_generation import read_generation
from webhook_app.services import submission
from webhook_app.services.progress import apply_report
from webhook_app.services.reconcile import Schedule, plan_reconciliation

SCHEDULE = Schedule(
    overdue_after=timedelta(seconds=60),
    max_poll_interval=timedelta(seconds=600),
    stale_submission=timedelta(seconds=300),
    resubmit_queued_after=timedelta(seconds=30),
)


def submitted(session: Session, **kwargs):  # type: ignore[no-untyped-def]
    job = make_job(session, **kwargs)
    apply_report(
        session,
        job,
        read_generation(generation("new")),
        source="submit",
        now=T0,
        recheck_after=SCHEDULE.overdue_after,
    )
    session.flush()
    return job


def plan(session: Session, seconds: float):  # type: ignore[no-untyped-def]
    result = plan_reconciliation(session, now=T0 + timedelta(seconds=seconds), schedule=SCHEDULE)
    session.flush()
    return result


def test_overdue_jobs_are_polled_with_a_growing_interval(session: Session) -> None:
    job = submitted(session)
    assert job.id not in plan(session, 59).poll
    assert job.id in plan(session, 60).poll
    # polled once: the next poll is one doubled interval later, not at the next beat
    assert job.id not in plan(session, 61).poll
    assert job.next_check_at == T0 + timedelta(seconds=60 + 120)
    assert job.id in plan(session, 180).poll
    assert job.next_check_at == T0 + timedelta(seconds=180 + 240)


def test_poll_interval_is_capped() -> None:
    assert SCHEDULE.poll_interval(30) == timedelta(seconds=600)


def test_deadline_times_out_and_keeps_polling_slowly(session: Session) -> None:
    job = submitted(session, deadline=timedelta(seconds=100))
    result = plan(session, 100)
    assert result.timed_out >= 1 and job.status == "timed_out"
    assert job.next_check_at == T0 + timedelta(seconds=100 + 600)
    assert job.id in plan(session, 700).poll


def test_queued_job_without_a_worker_is_resubmitted(session: Session) -> None:
    job = make_job(session)
    session.flush()
    assert job.id not in plan(session, 29).submit
    assert job.id in plan(session, 30).submit


def test_a_queued_job_waiting_for_its_slot_in_the_pace_is_not_taken_for_lost(
    session: Session,
) -> None:
    job = make_job(session)
    session.flush()
    submission.scheduled(session, job.id, at=T0 + timedelta(seconds=300))
    session.refresh(job)
    assert job.id not in plan(session, 30).submit
    assert job.id not in plan(session, 329).submit
    assert job.id in plan(session, 330).submit  # its task should have run by then


def test_stalled_submission_becomes_unknown_and_is_never_resubmitted(session: Session) -> None:
    job = make_job(session)
    session.flush()
    claim = submission.claim(session, job.id, now=T0)
    assert claim is not None
    session.flush()
    result = plan(session, 300)
    assert job.submission == "unknown" and result.unknown >= 1
    assert job.last_error and job.last_error["kind"] == "outcome_unknown"
    assert job.id not in plan(session, 400).submit
    assert job.id not in plan(session, 400).poll


def test_a_second_claim_of_the_same_job_gets_nothing(session: Session) -> None:
    job = make_job(session)
    session.flush()
    assert submission.claim(session, job.id, now=T0) is not None
    assert submission.claim(session, job.id, now=T0) is None
