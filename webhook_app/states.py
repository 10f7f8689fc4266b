"""The job state machine: statuses, their order, and which moves are allowed."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    PROCESSING = "processing"
    TIMED_OUT = "timed_out"
    COMPLETED = "completed"
    FAILED = "failed"


# Jobs only move to a higher rank. timed_out sits below the two final outcomes so that
# truth arriving after the deadline can still complete or fail the job.
_RANK = {
    JobStatus.QUEUED: 0,
    JobStatus.SUBMITTING: 1,
    JobStatus.SUBMITTED: 2,
    JobStatus.PROCESSING: 3,
    JobStatus.TIMED_OUT: 4,
    JobStatus.COMPLETED: 5,
    JobStatus.FAILED: 5,
}

TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.TIMED_OUT})
FINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED})
# Jobs the upstream holds: their truth can be asked for with imageGenerator.get.
IN_FLIGHT = frozenset({JobStatus.SUBMITTED, JobStatus.PROCESSING, JobStatus.TIMED_OUT})


def rank(status: str) -> int:
    return _RANK[JobStatus(status)]


def can_move(current: str, target: str) -> bool:
    """True when `target` is strictly further along than `current`."""
    now, then = JobStatus(current), JobStatus(target)
    if now in FINAL:
        return False
    return _RANK[then] > _RANK[now]
