"""The pause on refused credentials and the shared pace, on real databases and real Redis."""

from __future__ import annotations

import math
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from tests.common.factories import make_job
from webhook_app.infra.db import Database
from webhook_app.services import submission, upstream_state
from webhook_app.services.pace import DatabasePacer, RedisPacer
from webhook_app.states import JobStatus

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
REFUSED = {"kind": "credentials_refused", "code": 403, "exception": "EAPI\\EIllegalApiKey"}


def test_the_pause_changes_state_once_each_way(session: Session) -> None:
    assert upstream_state.pause(session, REFUSED, now=NOW, first_probe=2) is True
    assert upstream_state.pause(session, REFUSED, now=NOW, first_probe=2) is False
    pause = upstream_state.current_pause(session)
    assert pause is not None and pause.reason == REFUSED
    assert pause.next_probe_at == NOW + timedelta(seconds=2)

    assert upstream_state.resume(session) is True
    assert upstream_state.resume(session) is False
    assert upstream_state.current_pause(session) is None


def test_one_probe_at_a_time_with_a_growing_interval(session: Session) -> None:
    upstream_state.pause(session, REFUSED, now=NOW, first_probe=2)
    assert upstream_state.take_probe(session, now=NOW) is False  # not due yet
    due = NOW + timedelta(seconds=2)
    assert upstream_state.take_probe(session, now=due) is True
    assert upstream_state.take_probe(session, now=due) is False  # someone holds it

    waits = []
    at = due
    for _ in range(4):
        next_at = upstream_state.probe_failed(session, now=at, base=2, cap=10)
        assert next_at is not None
        waits.append((next_at - at).total_seconds())
        at = next_at
        assert upstream_state.take_probe(session, now=at) is True
    assert waits == [4, 8, 10, 10]
    # A probe whose holder died is taken over once its lease runs out.
    later = at + upstream_state.PROBE_LEASE + timedelta(seconds=1)
    assert upstream_state.take_probe(session, now=later) is True


def test_a_job_waits_queued_and_says_why_and_a_claim_is_given_back(session: Session) -> None:
    waiting = make_job(session, "a waiting job")
    claimed = make_job(session, "a claimed job")
    assert submission.claim(session, claimed.id, now=NOW) is not None

    submission.wait_for_credentials(session, waiting.id, REFUSED, now=NOW)
    submission.wait_for_credentials(session, claimed.id, REFUSED, now=NOW)

    for job in (waiting, claimed):
        session.refresh(job)
        assert job.status == JobStatus.QUEUED and job.submission is None
        assert job.last_error is not None
        assert job.last_error["kind"] == "credentials_refused"
        assert job.last_error["exception"] == "EAPI\\EIllegalApiKey"
    assert claimed.id in submission.queued_jobs(session, limit=10_000)


def test_the_in_flight_limit_keeps_the_job_queued(session: Session) -> None:
    first, second = make_job(session, "first"), make_job(session, "second")
    busy = submission.queued_jobs(session, limit=10_000)
    limit = sum(1 for _ in busy) + 1000  # far above: only the count is under test here
    assert submission.claim(session, first.id, now=NOW, max_in_flight=limit) is not None
    with pytest.raises(submission.InFlightLimit):
        submission.claim(session, second.id, now=NOW, max_in_flight=1)
    session.refresh(second)
    assert second.status == JobStatus.QUEUED


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def assert_paces(pacer: Any, advance: Any, now: Any) -> None:
    """Slots one interval (0.25 s) apart, in turn; a back-off pushes every slot past it.

    Each slot is `now()`, read just before its reservation, plus the wait: a busy machine
    that delays a reservation shortens its wait, never moves its slot.
    """

    def slot(limit: float) -> float:
        began = now()
        return float(began + pacer.reserve(limit))

    first = slot(math.inf)
    slots = [first] + [slot(math.inf) for _ in range(3)]
    assert [at - first for at in slots] == pytest.approx([0, 0.25, 0.5, 0.75], abs=0.05)
    # Too far ahead: told how long, nothing reserved.
    assert slot(0.1) - first == pytest.approx(1.0, abs=0.05)
    assert slot(0.1) - first == pytest.approx(1.0, abs=0.05)
    advance(1.0)
    assert pacer.reserve(math.inf) == pytest.approx(0, abs=0.05)
    backed_off = now()
    pacer.back_off(3.0)
    assert now() + pacer.slowed_for() - backed_off == pytest.approx(3.0, abs=0.1)
    assert slot(math.inf) - backed_off == pytest.approx(3.0, abs=0.1)


def test_the_database_pace(database: Database) -> None:
    # Far from the real clock, so this row's other users (none in these tests) never meet it.
    clock = Clock(4e9 + secrets.randbelow(10**6) * 100)

    def advance(seconds: float) -> None:
        clock.now += seconds

    assert_paces(DatabasePacer(database, 4.0, clock=clock), advance, clock)


def test_the_redis_pace(redis_url: str) -> None:
    import time

    import redis

    client = redis.Redis.from_url(redis_url)
    prefix = f"webhook_app:test-{secrets.token_hex(6)}:pace"
    try:
        assert_paces(RedisPacer(client, 4.0, prefix=prefix), time.sleep, time.time)
    finally:
        client.delete(f"{prefix}:next-call", f"{prefix}:slow-until")


def test_no_rate_spaces_nothing_but_still_backs_off(database: Database) -> None:
    clock = Clock(5e9 + secrets.randbelow(10**6) * 100)
    pacer = DatabasePacer(database, 0.0, clock=clock)
    assert [pacer.reserve(math.inf) for _ in range(3)] == [0.0, 0.0, 0.0]
    pacer.back_off(2.0)
    assert pacer.reserve(math.inf) == pytest.approx(2.0)
