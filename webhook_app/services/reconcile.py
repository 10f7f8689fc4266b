"""Finding jobs that need a nudge: overdue callbacks, passed deadlines, stalled submissions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from webhook_app.models import Job
from webhook_app.services.progress import move
from webhook_app.services.submission import CALL_IN_FLIGHT, RETRY, UNKNOWN
from webhook_app.settings import Settings
from webhook_app.states import IN_FLIGHT, TERMINAL, JobStatus

BATCH = 500
# The jobs planned on are locked FOR NO KEY UPDATE (key_share=True), like every writer's lock
# of a job: a delivery stored meanwhile takes a key-share lock on its job and must not wait.


@dataclass(frozen=True)
class Schedule:
    overdue_after: timedelta
    max_poll_interval: timedelta
    stale_submission: timedelta
    resubmit_queued_after: timedelta = timedelta(seconds=60)
    # A timed-out job is still polled (slowly) this long after its deadline.
    keep_polling_timed_out: timedelta = timedelta(days=1)

    @classmethod
    def from_settings(cls, settings: Settings) -> Schedule:
        return cls(
            overdue_after=settings.recheck_after,
            max_poll_interval=timedelta(seconds=settings.max_poll_interval),
            stale_submission=timedelta(seconds=settings.submission_stale_after),
            resubmit_queued_after=timedelta(seconds=settings.resubmit_queued_after),
        )

    def poll_interval(self, polls: int) -> timedelta:
        """Exponential per job: each unanswered poll doubles the wait, up to the cap."""
        return min(self.max_poll_interval, self.overdue_after * 2 ** min(polls + 1, 16))


@dataclass
class Plan:
    poll: list[int]
    submit: list[int]
    timed_out: int = 0
    unknown: int = 0


def plan_reconciliation(session: Session, *, now: datetime, schedule: Schedule) -> Plan:
    """Mark what has expired and return the jobs to poll and to (re)submit."""
    plan = Plan(poll=[], submit=[])

    expired = session.scalars(
        select(Job)
        .where(Job.status.not_in([s.value for s in TERMINAL]), Job.deadline_at <= now)
        .limit(BATCH)
        .with_for_update(skip_locked=True, key_share=True)
    )
    for job in expired:
        if move(session, job, JobStatus.TIMED_OUT, "poll", now, {"reason": "deadline passed"}):
            plan.timed_out += 1
            job.next_check_at = now + schedule.max_poll_interval if job.generation_uuid else None

    stalled = session.scalars(
        select(Job)
        .where(
            Job.status == JobStatus.SUBMITTING.value,
            Job.submission == CALL_IN_FLIGHT,
            Job.updated_at <= now - schedule.stale_submission,
        )
        .limit(BATCH)
        .with_for_update(skip_locked=True, key_share=True)
    )
    for job in stalled:
        # The worker that claimed it died mid-call: the request may have gone out.
        job.submission = UNKNOWN
        job.last_error = {
            "kind": "outcome_unknown",
            "message": "the submitting worker stopped before recording an answer",
            "at": now.isoformat(),
        }
        job.updated_at = now
        plan.unknown += 1

    lost_since = now - schedule.resubmit_queued_after
    plan.submit = list(
        session.scalars(
            select(Job.id)
            .where(
                (Job.status == JobStatus.QUEUED.value)
                | ((Job.status == JobStatus.SUBMITTING.value) & (Job.submission == RETRY)),
                Job.updated_at <= lost_since,
                # A queued job waiting for its slot in the pace has a task for it already.
                Job.next_check_at.is_(None) | (Job.next_check_at <= lost_since),
            )
            .order_by(Job.id)
            .limit(BATCH)
        )
    )

    due = session.scalars(
        select(Job)
        .where(
            Job.status.in_([s.value for s in IN_FLIGHT]),
            Job.generation_uuid.is_not(None),
            Job.next_check_at <= now,
            (Job.status != JobStatus.TIMED_OUT.value)
            | (Job.deadline_at > now - schedule.keep_polling_timed_out),
        )
        .order_by(Job.next_check_at)
        .limit(BATCH)
        .with_for_update(skip_locked=True, key_share=True)
    )
    for job in due:
        # Pushing the next check out now keeps the next beat from polling it again.
        job.next_check_at = now + schedule.poll_interval(job.polls)
        job.polls += 1
        plan.poll.append(job.id)
    return plan
