"""Merging upstream reports into jobs, against the real database."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from tests.common.factories import T0, generation, make_job
from webhook_app.depositphotos.kinds.image_generation import read_generation
from webhook_app.models import Event
from webhook_app.services.progress import Outcome, apply_report

RECHECK = timedelta(minutes=2)


def apply(session: Session, job, data, source="callback", at=T0):  # type: ignore[no-untyped-def]
    return apply_report(
        session, job, read_generation(data), source=source, now=at, recheck_after=RECHECK
    )


def statuses(session: Session, job) -> list[tuple[str | None, str, str]]:  # type: ignore[no-untyped-def]
    session.flush()
    events = session.scalars(select(Event).where(Event.job_id == job.id).order_by(Event.id))
    return [(e.from_status, e.to_status, e.source) for e in events]


def test_clean_sequence_completes_with_four_items(session: Session) -> None:
    job = make_job(session)
    items = ["a", "b", "c", "d"]
    new = generation("new", items=items)
    ref = new["uuid"]
    assert apply(session, job, new, source="submit").outcome is Outcome.APPLIED
    assert apply(session, job, generation("preview", ref, items)).outcome is Outcome.APPLIED
    result = apply(session, job, generation("final", ref, items))
    assert result.outcome is Outcome.APPLIED and result.completed
    assert job.status == "completed" and job.purchase_status == "paid"
    assert [(i.uuid, i.dp_item_id) for i in job.items] == list(
        zip(items, [900000, 900001, 900002, 900003], strict=True)
    )
    assert all(i.preview_url for i in job.items)
    assert job.next_check_at is None and job.finished_at == T0
    assert statuses(session, job) == [
        (None, "queued", "api"),
        ("queued", "submitted", "submit"),
        ("submitted", "processing", "callback"),
        ("processing", "completed", "callback"),
    ]


def test_reordered_final_then_preview_keeps_everything(session: Session) -> None:
    job = make_job(session)
    items = ["a", "b", "c", "d"]
    final = generation("final", items=items)
    apply(session, job, final)
    late_preview = generation("preview", final["uuid"], items)
    late_preview["items"][0]["previewUrl"] = None
    result = apply(session, job, late_preview)
    assert result.outcome is Outcome.NO_CHANGE
    assert job.status == "completed" and job.upstream_status == "completed"
    assert job.items[0].dp_item_id == 900000 and job.items[0].preview_url
    assert len(statuses(session, job)) == 2


def test_duplicate_report_changes_nothing(session: Session) -> None:
    job = make_job(session)
    preview = generation("preview")
    assert apply(session, job, preview).outcome is Outcome.APPLIED
    assert apply(session, job, preview).outcome is Outcome.NO_CHANGE
    assert [e[1] for e in statuses(session, job)] == ["queued", "processing"]


def test_report_about_another_generation_is_refused(session: Session) -> None:
    job = make_job(session)
    apply(session, job, generation("preview"))
    before = (job.status, [i.uuid for i in job.items])
    result = apply(session, job, generation("final"))
    assert result.outcome is Outcome.MISMATCH
    assert (job.status, [i.uuid for i in job.items]) == before


def test_completed_without_item_ids_is_held_for_confirmation(session: Session) -> None:
    job = make_job(session)
    data = generation("preview", status="completed")
    result = apply(session, job, data)
    assert result.outcome is Outcome.UNCONFIRMED
    assert job.status == "processing"


def test_unknown_status_keeps_items_and_does_not_move(session: Session) -> None:
    job = make_job(session)
    result = apply(session, job, generation("preview", status="rendering-hd"))
    assert result.outcome is Outcome.UNCONFIRMED
    assert job.status == "queued"
    assert len(job.items) == 4


def test_timed_out_job_still_completes_when_truth_arrives(session: Session) -> None:
    from webhook_app.services.progress import move
    from webhook_app.states import JobStatus

    job = make_job(session)
    data = generation("preview")
    apply(session, job, data)
    items = [i["uuid"] for i in data["items"]]
    assert move(session, job, JobStatus.TIMED_OUT, "poll", T0)
    late = generation("preview", data["uuid"], items)
    assert apply(session, job, late).outcome is Outcome.NO_CHANGE
    assert job.status == "timed_out"
    result = apply(session, job, generation("final", data["uuid"], items), source="poll")
    assert result.completed and job.status == "completed"


def test_failure_status_fails_the_job(session: Session) -> None:
    job = make_job(session)
    apply(session, job, generation("preview", status="failed", purchaseStatus="deferred"))
    assert job.status == "failed"
    assert job.upstream_status == "failed"


def test_a_first_report_reads_no_items_and_writes_the_job_once(session: Session) -> None:
    job = make_job(session)
    session.flush()
    session.expire(job, ["items"])  # as a job freshly read under its lock
    sent: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        sent.append(" ".join(statement.split()))

    connection = session.connection()
    event.listen(connection, "before_cursor_execute", seen)
    try:
        apply(session, job, generation("preview"), source="submit")
        session.flush()
    finally:
        event.remove(connection, "before_cursor_execute", seen)
    assert not [sql for sql in sent if sql.startswith("SELECT") and "job_items" in sql], sent
    assert len([sql for sql in sent if sql.startswith("UPDATE jobs")]) == 1, sent
    assert job.status == "processing" and len(job.items) == 4
    assert all(item.archive is not None for item in job.items)
