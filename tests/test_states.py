from __future__ import annotations

import pytest

from webhook_app.states import JobStatus, can_move

Q, SG, SD, P, T, C, F = (
    JobStatus.QUEUED,
    JobStatus.SUBMITTING,
    JobStatus.SUBMITTED,
    JobStatus.PROCESSING,
    JobStatus.TIMED_OUT,
    JobStatus.COMPLETED,
    JobStatus.FAILED,
)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (Q, SG),
        (Q, F),
        (SG, SD),
        (SG, P),
        (SG, C),
        (SD, P),
        (SD, C),
        (P, C),
        (P, F),
        (P, T),
        (SD, T),
        (T, C),
        (T, F),
        (Q, T),
    ],
)
def test_forward_moves_are_allowed(current: JobStatus, target: JobStatus) -> None:
    assert can_move(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [(SG, Q), (SD, SG), (P, SD), (C, P), (C, F), (F, C), (C, T), (F, T), (T, P), (P, P), (C, C)],
)
def test_backward_sideways_and_repeated_moves_are_refused(
    current: JobStatus, target: JobStatus
) -> None:
    assert not can_move(current, target)
