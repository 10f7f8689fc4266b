"""The submission task end to end in-process: a real database, a fake upstream at the client
seam, the task called directly."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import delete, select

from tests.common.databases import new_database_url
from tests.common.doubles import RecordingEnqueuer, use_worker
from tests.common.factories import generation, make_job
from tests.common.statements import round_trips
from webhook_app.infra.db import Database
from webhook_app.infra.queue import ENRICH_JOB, FOLLOW_UP, JOB_FINISHED
from webhook_app.models import Event, Job, Notification, Subscription
from webhook_app.services import submission, upstream_state
from webhook_app.services.jobs import NOT_ENQUEUED
from webhook_app.states import JobStatus
from workers.context import WorkerContext
from workers.tasks import submit_job

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
REFUSED = {"kind": "credentials_refused", "code": 403, "exception": "EAPI\\EIllegalApiKey"}


class Upstream:
    """imageGenerator.generate answering a finished generation of four items."""

    def __init__(self) -> None:
        self.generated: list[str] = []

    @contextmanager
    def prepaid(self) -> Iterator[None]:
        yield

    def generate(self, **params: Any) -> dict[str, Any]:
        self.generated.append(params["prompt"])
        return generation("final")


class CountingPacer:
    def __init__(self) -> None:
        self.reserved = 0

    def reserve(self, max_wait: float) -> float:
        self.reserved += 1
        return 0.0

    def slowed_for(self) -> float:
        return 0.0

    def back_off(self, seconds: float) -> None:
        pass


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    # A database of its own: statements are counted with nobody else's subscriptions in it.
    url = new_database_url(request.param, tmp_path_factory.mktemp(request.param), request)
    database = Database(url, sender=RecordingEnqueuer())
    yield database
    database.dispose()


@pytest.fixture
def worker(db: Database, monkeypatch: pytest.MonkeyPatch) -> WorkerContext:
    assert isinstance(db.sender, RecordingEnqueuer)
    db.sender.sent.clear()
    return use_worker(db, monkeypatch, Upstream(), db.sender, pacer=CountingPacer())


def new_job(db: Database, **fields: Any) -> int:
    with db.transaction() as session:
        job = make_job(session)
        for name, value in fields.items():
            setattr(job, name, value)
        session.flush()
        return job.id


def job_row(db: Database, job_id: int) -> Job:
    with db.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def story(db: Database, job_id: int) -> list[tuple[str | None, str, str]]:
    with db.transaction() as session:
        events = session.scalars(select(Event).where(Event.job_id == job_id).order_by(Event.id))
        return [(e.from_status, e.to_status, e.source) for e in events]


def test_a_submission_costs_nine_round_trips_on_postgresql(worker: WorkerContext) -> None:
    db = worker.db
    submit_job(new_job(db))  # warm: the statements' first preparation is not measured
    job_id = new_job(db)
    db.sender.sent.clear()  # type: ignore[union-attr]
    with round_trips(db) as trips:
        submit_job(job_id)
    statements, transactions = len(trips.statements), trips.transactions
    if db.engine.dialect.name == "postgresql":
        # The claimable read, the claim in one statement, then the answer in one transaction:
        # lock (with the change position and whether anybody subscribes), events, the job,
        # items, archives.
        assert (statements, transactions) == (7, 1)
        assert statements + 2 * transactions == 9
    job = job_row(db, job_id)
    assert job.status == JobStatus.COMPLETED and job.submission is None and job.attempts == 1
    assert story(db, job_id) == [
        (None, "queued", "api"),
        ("queued", "submitting", "submit"),
        ("submitting", "completed", "submit"),
    ]
    # What follows the job's end went out after the commit, in one message.
    ((name, parts),) = db.sender.sent  # type: ignore[union-attr]
    assert name == FOLLOW_UP
    assert {task for task, _ in parts} >= {JOB_FINISHED, ENRICH_JOB}


def test_a_duplicate_task_neither_submits_again_nor_spends_a_slot(worker: WorkerContext) -> None:
    job_id = new_job(worker.db)
    submit_job(job_id)
    submit_job(job_id)
    assert worker.client.generated == ["a lighthouse at dawn"]  # type: ignore[attr-defined]
    assert worker.pacer.reserved == 1  # type: ignore[attr-defined]
    assert job_row(worker.db, job_id).attempts == 1


def test_a_paused_upstream_leaves_the_job_waiting_and_spends_nothing(
    worker: WorkerContext,
) -> None:
    job_id = new_job(worker.db)
    with worker.db.transaction() as session:
        upstream_state.pause(session, REFUSED, now=NOW, first_probe=60)
    try:
        submit_job(job_id)
    finally:
        with worker.db.transaction() as session:
            upstream_state.resume(session)
    job = job_row(worker.db, job_id)
    assert job.status == JobStatus.QUEUED and job.attempts == 0
    assert job.last_error is not None and job.last_error["kind"] == "credentials_refused"
    assert worker.client.generated == [] and worker.pacer.reserved == 0  # type: ignore[attr-defined]


def test_a_subscriber_is_told_of_the_job_the_submission_finished(worker: WorkerContext) -> None:
    db = worker.db
    with db.transaction() as session:
        subscription = Subscription(
            public_id="sub_submission", url="http://127.0.0.1:9/hook", secret="whsec_x"
        )
        session.add(subscription)
    try:
        job_id = new_job(db)
        submit_job(job_id)
        with db.transaction() as session:
            told = session.scalars(
                select(Notification.event_type).where(Notification.job_id == job_id)
            ).all()
        assert told == ["job.completed"]
    finally:
        with db.transaction() as session:  # its notifications go with it (on delete cascade)
            session.execute(delete(Subscription).where(Subscription.id == subscription.id))


def test_take_claims_a_queued_job_once(worker: WorkerContext) -> None:
    db = worker.db
    job_id = new_job(db, last_error={"kind": NOT_ENQUEUED, "message": "broker away"})
    before = job_row(db, job_id)
    claim = submission.take(db, job_id, now=NOW)
    assert claim is not None and (claim.job_id, claim.attempt) == (job_id, 1)
    assert claim.public_id == before.public_id and claim.prompt == before.prompt
    assert submission.take(db, job_id, now=NOW) is None
    job = job_row(db, job_id)
    assert (job.status, job.submission, job.attempts) == ("submitting", "in_flight", 1)
    assert job.last_error is None and job.updated_at == NOW
    assert job.version == before.version + 1 and job.change_seq > before.change_seq
    assert story(db, job_id)[1:] == [("queued", "submitting", "submit")]


def test_take_claims_a_retry_again_without_a_new_transition(worker: WorkerContext) -> None:
    db = worker.db
    error = {"kind": "transient", "message": "try again"}
    job_id = new_job(db, status="submitting", submission="retry", attempts=1, last_error=error)
    claim = submission.take(db, job_id, now=NOW)
    assert claim is not None and claim.attempt == 2
    job = job_row(db, job_id)
    assert (job.status, job.submission, job.last_error) == ("submitting", "in_flight", error)
    assert story(db, job_id) == [(None, "queued", "api")]


@pytest.mark.parametrize(
    "fields",
    [
        {"status": "submitting", "submission": "in_flight"},
        {"status": "submitting", "submission": "unknown"},
        {"status": "completed"},
    ],
)
def test_take_leaves_a_job_that_is_not_free(worker: WorkerContext, fields: dict[str, Any]) -> None:
    job_id = new_job(worker.db, **fields)
    before = job_row(worker.db, job_id)
    assert submission.take(worker.db, job_id, now=NOW) is None
    assert submission.take(worker.db, 10**12, now=NOW) is None
    after = job_row(worker.db, job_id)
    assert (after.status, after.submission, after.version) == (
        before.status,
        before.submission,
        before.version,
    )


@pytest.mark.parametrize("holder_defers", [False, True])
def test_take_waits_for_the_jobs_lock_and_sees_what_its_holder_did(
    worker: WorkerContext, holder_defers: bool
) -> None:
    """A claim racing another writer of the job decides on the row that writer committed."""
    db = worker.db
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite writers take turns for the whole transaction")
    job_id = new_job(db)
    taken: list[submission.Claim | None] = []
    with db.transaction() as session:
        assert submission.claim(session, job_id, now=NOW) is not None
        if holder_defers:
            session.flush()
            job = session.get(Job, job_id)
            assert job is not None
            job.submission = submission.RETRY  # as `defer` leaves it
        racing = threading.Thread(target=lambda: taken.append(submission.take(db, job_id, now=NOW)))
        racing.start()
        time.sleep(0.3)
        assert not taken  # waiting for the row
    racing.join(5)
    job = job_row(db, job_id)
    if holder_defers:
        assert taken[0] is not None and taken[0].attempt == 2
        assert (job.submission, job.attempts) == ("in_flight", 2)
    else:
        assert taken == [None] and job.attempts == 1
    # One transition to submitting, whoever claimed.
    assert story(db, job_id)[1:] == [("queued", "submitting", "submit")]


def test_claimable_tells_the_pause_with_the_job(worker: WorkerContext) -> None:
    db = worker.db
    job_id = new_job(db)
    with db.read() as session:
        assert submission.claimable(session, job_id) == (True, None)
        assert submission.claimable(session, 10**12) == (False, None)
    with db.transaction() as session:
        upstream_state.pause(session, REFUSED, now=NOW, first_probe=60)
    try:
        with db.read() as session:
            free, pause = submission.claimable(session, job_id)
        assert free and pause is not None and pause.reason == REFUSED and pause.since == NOW
    finally:
        with db.transaction() as session:
            upstream_state.resume(session)
