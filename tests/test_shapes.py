"""The answers' one declaration (`webhook_app.shapes`) and what follows from it agree: the
serializer's output on real rows, the OpenAPI schemas and the client's types. The rows are
read back from the database, on SQLite and PostgreSQL, with a distinct value in every
column, so a column read into the wrong field shows."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, get_args, get_type_hints

import pytest
from jsonschema import Draft202012Validator
from sqlalchemy.orm import Session

from tests.common.factories import T0
from webhook_app import shapes
from webhook_app.models import Delivery, Event, ItemArchive, Job, JobItem
from webhook_app.services import archive, jobs, submission, views
from webhook_app.services.progress import Outcome
from webhook_app.states import JobStatus
from webhook_app.tools import client
from webhook_app.web import openapi
from webhook_app.web.serialize import (
    batch_json,
    changes_json,
    delivery_json,
    event_json,
    job_json,
    job_page_json,
    stats_json,
)


def closed(name: str) -> Draft202012Validator:
    """A validator of a component that refuses keys its shape does not declare."""
    schemas = {**openapi.SCHEMAS, **openapi.shape_schemas(closed=True)}
    return Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": {"schemas": schemas}}
    )


def assert_is(name: str, answer: Any) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in closed(name).iter_errors(answer)]
    assert not errors, errors


def keys_in_order(shape: Any) -> list[str]:
    return list(get_type_hints(shape))


def make_jobs(session: Session) -> tuple[Job, Job]:
    """A job with every column set to a value of its own, and the one it retries (bare)."""
    later = [T0 + timedelta(minutes=n) for n in range(8)]
    origin = Job(prompt="the first try", created_at=later[0], deadline_at=later[1])
    session.add(origin)
    session.flush()
    job = Job(
        kind="image_generation",
        status=JobStatus.COMPLETED.value,
        idempotency_key="key-1",
        prompt="a lighthouse at dawn",
        aspect_ratio="16:9",
        medium="art",
        meta={"team": "design"},
        generation_uuid="generation-1",
        upstream_status="completed",
        purchase_status="paid",
        submission=submission.CALL_IN_FLIGHT,
        attempts=3,
        last_error={"kind": "http", "code": 502, "message": "bad gateway"},
        retry_of_id=origin.id,
        created_at=later[2],
        updated_at=later[3],
        submitted_at=later[4],
        finished_at=later[5],
        deadline_at=later[6],
    )
    job.items = [
        JobItem(
            position=n,
            uuid=f"item-{n}",
            dp_item_id=900 + n,
            preview_url=f"https://example.test/{n}.png",
            width=100 + n,
            height=200 + n,
            media_type="image",
        )
        for n in range(4)
    ]
    session.add(job)
    session.flush()
    states = (archive.ARCHIVED, archive.PENDING, archive.FAILED)
    for n, (item, state) in enumerate(zip(job.items, states, strict=False)):
        item.archive = ItemArchive(
            state=state,
            sha256=f"{n:064x}" if state == archive.ARCHIVED else None,
            size=1000 + n,
            content_type="image/png",
            width=300 + n,
            height=400 + n,
            attempts=5 + n,
            last_error="expired" if state == archive.FAILED else None,
            archived_at=later[7] if state == archive.ARCHIVED else None,
        )
    session.add_all(
        [
            Event(job_id=job.id, at=later[2], source="api", from_status=None, to_status="queued"),
            Event(
                job_id=job.id,
                at=later[5],
                source="callback",
                from_status="processing",
                to_status="completed",
                detail={"items": 4},
            ),
            Delivery(
                job_id=job.id,
                fingerprint="a" * 64,
                body=b'{"type": "success"}',
                outcome=Outcome.APPLIED.value,
                content_type="application/json",
                headers={"User-Agent": "upstream"},
                source_addr="203.0.113.5",
                first_received_at=later[4],
                last_received_at=later[5],
                received_count=2,
            ),
            Delivery(
                job_id=job.id,
                fingerprint="b" * 64,
                body=b"\xff\xfe",
                outcome=Outcome.UNPARSEABLE.value,
                detail="not JSON",
                first_received_at=later[5],
                last_received_at=later[5],
            ),
        ]
    )
    session.flush()
    session.expire_all()
    return origin, job


def test_the_rows_read_by_name_hold_what_the_orm_holds(session: Session) -> None:
    origin, job = make_jobs(session)
    connection = session.connection()
    read = views.job_view(connection, job.public_id)
    assert read == views.view_of(job)
    assert read == views.job_views(connection, views.JOBS.where(Job.id == job.id))[0]
    assert read is not None and read.retry_of == origin.public_id and read.meta == job.meta
    first = read.items[0]
    assert (first.width, first.archive and first.archive.width) == (100, 300)
    assert read.items[3].archive is None
    assert views.job_view(connection, origin.public_id) == views.view_of(origin)


def test_every_answer_is_its_declared_shape(session: Session) -> None:
    origin, job = make_jobs(session)
    connection = session.connection()
    full, bare = (views.job_view(connection, j.public_id) for j in (job, origin))
    assert full is not None and bare is not None
    for view in (full, bare):
        answer = job_json(view)
        assert_is("Job", answer)
        assert list(answer) == keys_in_order(shapes.Job)
        assert list(answer["links"]) == keys_in_order(shapes.Links)
    items = job_json(full)["items"]
    for item in items:
        assert list(item) == keys_in_order(shapes.Item)
    kept = [item["archive"] for item in items if item["archive"] is not None]
    assert {a["state"] for a in kept} == set(get_args(shapes.ArchiveState))
    assert all(list(a) == keys_in_order(shapes.Archive) for a in kept)
    assert_is("JobPage", job_page_json([full, bare], None))
    assert_is("ChangesPage", changes_json([full], "cursor", more=False))
    assert_is("BatchJobs", batch_json([bare], ["nope"]))
    assert_is("Stats", stats_json({status.value: 1 for status in JobStatus}))

    deliveries = [delivery_json(d) for d in jobs.deliveries_of(session, full)]
    assert {d["body_encoding"] for d in deliveries} == {"utf-8", "hex"}
    for answer in deliveries:
        assert_is("Delivery", answer)
        assert list(answer) == keys_in_order(shapes.Delivery)
    events = [event_json(e) for e in jobs.events_of(session, full)]
    assert len(events) == 2
    for answer in events:
        assert_is("Event", answer)
        assert list(answer) == keys_in_order(shapes.Event)


def test_a_key_the_shape_does_not_declare_is_refused() -> None:
    """The check above would pass on anything if the closed schemas were open."""
    errors = list(closed("Event").iter_errors({"at": "x", "source": "api", "to": "q"}))
    assert {e.validator for e in errors} == {"required"}
    event = {"at": "x", "source": "a", "from": None, "to": "q", "detail": None, "extra": 1}
    assert [e.validator for e in closed("Event").iter_errors(event)] == ["additionalProperties"]


@pytest.mark.parametrize("shape", shapes.COMPONENTS, ids=lambda shape: shape.__name__)
def test_the_document_and_the_client_have_each_shape(app: Any, shape: Any) -> None:
    served = openapi.document(app)["components"]["schemas"][shape.__name__]
    assert served == openapi.shape_schema(shape)
    assert list(served["properties"]) == served["required"] == keys_in_order(shape)
    assert getattr(client, shape.__name__) is shape


def test_the_enumerations_are_the_servers() -> None:
    assert get_args(shapes.Status) == tuple(status.value for status in JobStatus)
    assert get_args(shapes.Outcome) == tuple(outcome.value for outcome in Outcome)
    assert set(get_args(shapes.ArchiveState)) == {
        archive.PENDING,
        archive.ARCHIVED,
        archive.FAILED,
    }
    submissions = (submission.CALL_IN_FLIGHT, submission.RETRY, submission.UNKNOWN)
    assert get_args(shapes.Submission) == submissions
