"""Store first, apply later: the receiver's one statement, and the batches that apply what it
kept (on SQLite and PostgreSQL). The `raw` client leaves deliveries pending, as the receiver
does; the tests apply them by calling the applier."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, text, update

from tests.common.doubles import TEST_SECRET, RecordingEnqueuer
from tests.common.factories import envelope, generation
from tests.common.statements import recorded_statements
from webhook_app.depositphotos.kinds.image_generation import read_generation
from webhook_app.infra.callback_tokens import callback_token
from webhook_app.infra.queue import ARCHIVE_ITEMS, REFRESH_JOB
from webhook_app.models import Delivery, Event, Job, utcnow
from webhook_app.services.applying import anything_pending, apply_pending
from webhook_app.services.jobs import lock_job
from webhook_app.services.progress import apply_report
from webhook_app.settings import Settings

JOBS = "/api/v1/jobs"


@pytest.fixture
def raw(app: Any) -> Any:
    app.test_client_class = FlaskClient
    return app.test_client()


@pytest.fixture
def db(app: Any) -> Any:
    return app.extensions["webhook_app"].db


def new_job(raw: Any, auth: dict[str, str]) -> str:
    response = raw.post(JOBS, json={"prompt": "a harbour"}, headers=auth)
    assert response.status_code == 202
    return str(response.get_json()["id"])


def post(raw: Any, job_id: str, data: dict[str, Any]) -> Any:
    url = f"/callbacks/{job_id}/{callback_token(TEST_SECRET, job_id)}"
    return raw.post(url, data=envelope(data), content_type="application/json")


def apply(db: Any, settings: Settings) -> dict[str, int]:
    return dict(apply_pending(db, limit=100, recheck_after=settings.recheck_after))


def kept(db: Any, job_id: str) -> list[Delivery]:
    with db.read() as session:
        query = select(Delivery).join(Job).where(Job.public_id == job_id).order_by(Delivery.id)
        return list(session.scalars(query))


def job_row(db: Any, job_id: str) -> Job:
    with db.read() as session:
        job = session.scalar(select(Job).where(Job.public_id == job_id))
        assert job is not None
        return job


def test_the_receiver_keeps_a_delivery_in_one_statement_and_applies_nothing(
    raw: Any, db: Any, auth: dict[str, str], enqueuer: RecordingEnqueuer, settings: Settings
) -> None:
    job_id = new_job(raw, auth)
    version = job_row(db, job_id).version
    sent_before = list(enqueuer.sent)
    with recorded_statements(db) as statements:
        response = post(raw, job_id, generation("preview"))
    assert response.status_code == 200
    assert response.get_json() == {"received": True, "duplicate": False}
    work = [sql for sql in statements if not sql.startswith(("BEGIN", "COMMIT"))]
    assert len(work) == 1 and work[0].lstrip().startswith("INSERT INTO deliveries"), work
    (delivery,) = kept(db, job_id)
    assert (delivery.outcome, delivery.applied_at, delivery.received_count) == ("pending", None, 1)
    assert job_row(db, job_id).status == "queued" and job_row(db, job_id).version == version
    assert enqueuer.sent == sent_before  # no task per callback
    assert (
        raw.get(f"{JOBS}/{job_id}/deliveries", headers=auth).get_json()["deliveries"][0]["outcome"]
        == "pending"
    )
    assert anything_pending(db)
    assert apply(db, settings) == {"applied": 1}


def test_a_batch_claims_its_deliveries_and_locks_their_jobs_in_one_statement(
    raw: Any, db: Any, auth: dict[str, str], settings: Settings
) -> None:
    jobs = [new_job(raw, auth) for _ in range(3)]
    for job_id in jobs:
        assert post(raw, job_id, generation("preview")).status_code == 200
    with recorded_statements(db) as statements:
        assert apply(db, settings) == {"applied": 3}
    reads = [
        sql
        for sql in statements
        if sql.lstrip().startswith(("SELECT", "WITH")) and "next_change_seq" not in sql
    ]
    # The claim with its jobs, then the items (and the change position, on SQLite): no
    # statement of its own for the jobs.
    assert len(reads) == 2, reads
    assert "FROM deliveries" in reads[0] and "FROM jobs" in reads[0], reads[0]
    assert "job_items" in reads[1], reads[1]
    assert [job_row(db, job_id).status for job_id in jobs] == ["processing"] * 3


def test_one_batch_applies_many_jobs_and_asks_for_their_archives_together(
    raw: Any, db: Any, auth: dict[str, str], enqueuer: RecordingEnqueuer, settings: Settings
) -> None:
    jobs = [new_job(raw, auth) for _ in range(3)]
    previews = {job_id: generation("preview") for job_id in jobs}
    for job_id, data in previews.items():
        assert post(raw, job_id, data).status_code == 200
    assert post(raw, jobs[0], previews[jobs[0]]).get_json()["duplicate"] is True
    enqueuer.sent.clear()

    outcomes = apply(db, settings)
    assert outcomes.get("applied", 0) >= 3
    assert not anything_pending(db)
    for job_id in jobs:
        assert job_row(db, job_id).status == "processing"
        assert [(d.outcome, d.received_count) for d in kept(db, job_id)] == [
            ("applied", 2 if job_id == jobs[0] else 1)
        ]
    archives = [args for name, args in enqueuer.sent if name == ARCHIVE_ITEMS]
    wanted = {item["uuid"] for data in previews.values() for item in data["items"]}
    assert len(archives) == 1 and set(archives[0]) >= wanted
    assert apply(db, settings) == {}


def test_applying_a_delivery_again_changes_nothing(
    raw: Any, db: Any, auth: dict[str, str], settings: Settings
) -> None:
    job_id = new_job(raw, auth)
    data = generation("preview")
    post(raw, job_id, data)
    post(raw, job_id, generation("final", data["uuid"], [i["uuid"] for i in data["items"]]))
    apply(db, settings)
    before = job_row(db, job_id)
    with db.read() as session:
        events = session.scalars(select(Event.to_status).where(Event.job_id == before.id)).all()
    assert before.status == "completed"

    with db.transaction() as session:  # as if the outcomes had never been written
        session.execute(
            update(Delivery).where(Delivery.job_id == before.id).values(outcome="pending")
        )
    assert apply(db, settings) == {"no_change": 2}
    after = job_row(db, job_id)
    assert (after.status, after.version, after.change_seq) == (
        before.status,
        before.version,
        before.change_seq,
    )
    with db.read() as session:
        again = session.scalars(select(Event.to_status).where(Event.job_id == before.id)).all()
    assert again == events


def test_a_job_whose_deliveries_break_is_set_apart_and_the_rest_of_its_batch_applies(
    raw: Any, db: Any, auth: dict[str, str], enqueuer: RecordingEnqueuer, settings: Settings
) -> None:
    first, second = new_job(raw, auth), new_job(raw, auth)
    data = generation("preview")
    post(raw, first, data)
    apply(db, settings)
    # The second job's delivery claims the first job's generation: a unique key says no.
    claimed = generation("preview", data["uuid"])
    post(raw, second, claimed)
    third = new_job(raw, auth)
    post(raw, third, generation("preview"))
    enqueuer.sent.clear()

    assert apply(db, settings) == {"error": 1, "applied": 1}
    (broken,) = kept(db, second)
    assert broken.outcome == "error" and broken.detail == "IntegrityError"
    assert job_row(db, second).status == "queued" and job_row(db, second).generation_uuid is None
    assert job_row(db, third).status == "processing"
    assert (REFRESH_JOB, (job_row(db, second).id,)) in enqueuer.sent
    # What the rolled-back merge asked for is not sent; what the batch's other job asked is.
    archived = {uuid for name, args in enqueuer.sent if name == ARCHIVE_ITEMS for uuid in args}
    assert archived and not archived & {item["uuid"] for item in claimed["items"]}


def test_reconciliation_sweeps_only_deliveries_older_than_its_horizon(
    raw: Any, db: Any, auth: dict[str, str], settings: Settings
) -> None:
    job_id = new_job(raw, auth)
    post(raw, job_id, generation("preview"))
    received = kept(db, job_id)[0].first_received_at
    early = apply_pending(
        db, limit=10, recheck_after=settings.recheck_after, received_before=received
    )
    assert dict(early) == {} and kept(db, job_id)[0].outcome == "pending"
    late = apply_pending(
        db, limit=10, recheck_after=settings.recheck_after, received_before=utcnow()
    )
    assert dict(late) == {"applied": 1} and kept(db, job_id)[0].outcome == "applied"


def test_appliers_skip_deliveries_another_applier_holds(
    raw: Any, db: Any, auth: dict[str, str], settings: Settings, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: there is nothing to skip")
    held, free = new_job(raw, auth), new_job(raw, auth)
    post(raw, held, generation("preview"))
    post(raw, free, generation("preview"))
    (delivery,) = kept(db, held)
    with db.engine.connect() as other, other.begin():  # another applier's batch, under way
        other.execute(
            text("SELECT id FROM deliveries WHERE id = :id FOR UPDATE"), {"id": delivery.id}
        )
        assert apply(db, settings) == {"applied": 1}
        assert job_row(db, free).status == "processing"
        assert job_row(db, held).status == "queued"
    assert apply(db, settings) == {"applied": 1}
    assert job_row(db, held).status == "processing"


def _stage(stage: str, **changes: Any) -> Any:
    return lambda reference, items: generation(stage, reference, items, **changes)


def _without_ids(reference: str, items: list[str]) -> dict[str, Any]:
    data = generation("final", reference, items)
    for item in data["items"][1:]:
        item["dpItemId"] = None
    return data


def _fewer_items(reference: str, items: list[str]) -> dict[str, Any]:
    return generation("preview", reference, items[:2])


# Sequences of reports about one generation, each a function of its uuid and item uuids.
SEQUENCES = {
    "in order": [_stage("new"), _stage("preview"), _stage("final")],
    "final first": [_stage("final"), _stage("preview"), _stage("new")],
    "repeated": [_stage("preview"), _stage("preview"), _stage("final"), _stage("final")],
    "items revealed in turn": [_fewer_items, _stage("preview"), _stage("final")],
    "completed without every id": [_stage("preview"), _without_ids, _stage("final")],
    "unknown status": [_stage("preview", status="rendering-hd"), _stage("final")],
    "failed": [_stage("preview"), _stage("preview", status="failed"), _stage("final")],
}


def _seen(db: Any, job_id: str) -> dict[str, Any]:
    """What a reader is shown of a job, its items, archives and story, with its own uuids
    replaced by their order, so that two jobs told the same things compare equal."""
    with db.read() as session:
        job = session.scalar(select(Job).where(Job.public_id == job_id))
        assert job is not None
        events = session.scalars(select(Event).where(Event.job_id == job.id).order_by(Event.id))
        story = [(e.from_status, e.to_status, e.source, e.detail) for e in events]
        items = [
            (i.position, i.dp_item_id, bool(i.preview_url), i.archive and i.archive.state)
            for i in job.items
        ]
    return {
        "job": (job.status, job.upstream_status, job.purchase_status, job.submission),
        "set": (job.finished_at is None, job.next_check_at is None, job.submitted_at is None),
        "version": job.version,
        "items": items,
        "story": story,
    }


@pytest.mark.parametrize("sequence", SEQUENCES)
@pytest.mark.parametrize("batched", [True, False], ids=["one batch", "a batch each"])
def test_the_applier_merges_as_a_poll_does(
    raw: Any, db: Any, auth: dict[str, str], settings: Settings, sequence: str, batched: bool
) -> None:
    """The applier writes plain rows, a poll writes through the ORM: one set of rules."""
    polled, called_back = new_job(raw, auth), new_job(raw, auth)
    for job_id, source in ((polled, "poll"), (called_back, "callback")):
        reference, items = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(4)]
        for report in SEQUENCES[sequence]:
            data = report(reference, items)
            if source == "callback":
                assert post(raw, job_id, data).status_code == 200
                if not batched:
                    apply(db, settings)
                continue
            with db.transaction() as session:
                job = lock_job(session, public_id=job_id)
                apply_report(
                    session,
                    job,
                    read_generation(data),
                    source="callback",
                    now=utcnow(),
                    recheck_after=settings.recheck_after,
                )
    apply(db, settings)
    assert not anything_pending(db)
    seen, expected = _seen(db, called_back), _seen(db, polled)
    if batched:  # a version counts transactions: one batch is one, each poll was one
        assert seen.pop("version") <= expected.pop("version")
    assert seen == expected


def test_an_applier_looks_again_at_once_after_a_full_or_slow_batch(tmp_path: Any) -> None:
    from workers.applier import Applier

    settings = Settings(
        environment="test",
        database_url=f"sqlite:///{tmp_path / 'applier.db'}",
        apply_batch_size=100,
        apply_poll_interval=0.05,
    )
    applier = Applier(settings, RecordingEnqueuer())
    try:
        assert applier.pause(100, 0.001) == 0.0  # a full batch: more are likely waiting
        assert applier.pause(3, 0.2) == 0.0  # deliveries arrived while it worked
        assert applier.pause(3, 0.01) == pytest.approx(0.04)  # one look per interval
        assert applier.pause(0, 0.001) == pytest.approx(0.049)  # idle
    finally:
        applier.db.dispose()
