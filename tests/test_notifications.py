"""Subscriptions and completion notifications, verified with the standardwebhooks package."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import delete, select
from sqlalchemy.orm import selectinload
from standardwebhooks import Webhook

from tests.common.doubles import RecordingEnqueuer
from tests.common.factories import T0, generation, make_job
from tests.common.subscriber import Subscriber
from webhook_app.depositphotos.kinds.image_generation import read_generation
from webhook_app.infra.db import Database, follow_ups
from webhook_app.infra.queue import DELIVER_NOTIFICATION
from webhook_app.models import Job, Notification, Subscription, utcnow
from webhook_app.services import notifications
from webhook_app.services.progress import apply_report, move
from webhook_app.services.subscriptions import create_subscription, wants
from webhook_app.states import JobStatus

BASE_URL = "https://images.example.com"


@pytest.fixture(autouse=True)
def no_subscriptions_left(database: Database) -> Iterator[None]:
    # Subscriptions apply to every job of the shared database: none may outlive its test.
    yield
    with database.transaction() as session:
        session.execute(delete(Subscription))


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    subscriber = Subscriber()
    yield subscriber
    subscriber.close()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def subscribe(database: Database, url: str, **filters: Any) -> tuple[str, str]:
    with database.transaction() as session:
        subscription = create_subscription(session, {"url": url, **filters}, now=T0)
        return subscription.public_id, subscription.secret


def finish(
    database: Database, metadata: dict[str, Any] | None = None, *, now: datetime = T0
) -> tuple[int, list[Any]]:
    """A job completed by callbacks; its id and the follow-ups requested."""
    with database.transaction() as session:
        job = make_job(session)
        job.meta = metadata
        final = generation("final")
        apply_report(
            session,
            job,
            read_generation(final),
            source="callback",
            now=now,
            recheck_after=timedelta(minutes=2),
        )
        return job.id, follow_ups(session)


def notifications_of(database: Database, job_id: int) -> list[Notification]:
    with database.transaction() as session:
        return list(
            session.scalars(
                select(Notification)
                .options(selectinload(Notification.subscription))
                .where(Notification.job_id == job_id)
                .order_by(Notification.id)
            )
        )


def deliver(database: Database, public_id: str, clock: Clock) -> str | None:
    return notifications.deliver(
        database, requests.Session(), public_id, clock=clock, base_url=BASE_URL, timeout=5
    )


def test_filters_on_status_and_metadata() -> None:
    job = Job(meta={"team": "design", "order": 42})
    every = Subscription(statuses=None, metadata_filter=None)
    failures = Subscription(statuses=["failed", "timed_out"], metadata_filter=None)
    design = Subscription(statuses=None, metadata_filter={"team": "design"})
    sales = Subscription(statuses=None, metadata_filter={"team": "sales"})
    assert wants(every, job, "completed") and wants(design, job, "completed")
    assert not wants(failures, job, "completed") and wants(failures, job, "timed_out")
    assert not wants(sales, job, "completed")
    assert not wants(design, Job(meta=None), "completed")


def test_a_finished_job_writes_one_notification_per_interested_subscriber(
    database: Database,
) -> None:
    everyone, _ = subscribe(database, "https://a.example/hook")
    subscribe(database, "https://b.example/hook", statuses=["failed"])
    designers, _ = subscribe(database, "https://c.example/hook", metadata={"team": "design"})

    job_id, follow_ups = finish(database, {"team": "design"})

    sent = notifications_of(database, job_id)
    assert sorted(n.subscription.public_id for n in sent) == sorted([everyone, designers])
    assert all(n.event_type == "job.completed" and n.state == "pending" for n in sent)
    assert [args for name, args in follow_ups if name == DELIVER_NOTIFICATION] == [
        (n.public_id,) for n in sent
    ]


def test_timed_out_then_completed_is_told_twice(database: Database) -> None:
    subscribe(database, "https://a.example/hook")
    with database.transaction() as session:
        job = make_job(session)
        move(session, job, JobStatus.TIMED_OUT, "poll", T0)
        move(session, job, JobStatus.TIMED_OUT, "poll", T0)  # refused: nothing more
        move(session, job, JobStatus.FAILED, "poll", T0)
        job_id = job.id
    assert [n.event_type for n in notifications_of(database, job_id)] == [
        "job.timed_out",
        "job.failed",
    ]


def test_delivery_is_signed_per_standard_webhooks(
    database: Database, subscriber: Subscriber
) -> None:
    _, secret = subscribe(database, subscriber.url)
    job_id, _ = finish(database)
    (notification,) = notifications_of(database, job_id)

    assert deliver(database, notification.public_id, Clock(utcnow())) == "delivered"

    (received,) = subscriber.received
    payload = Webhook(secret).verify(received.body, received.headers)
    assert received.headers["webhook-id"] == notification.public_id
    assert payload["type"] == "job.completed"
    data = payload["data"]
    assert data["status"] == "completed" and len(data["items"]) == 4
    item = data["items"][0]
    assert item["image_url"] == f"{BASE_URL}/api/v1/jobs/{data['id']}/items/{item['uuid']}/image"
    assert data["url"] == f"{BASE_URL}/api/v1/jobs/{data['id']}"
    tampered = dict(received.headers, **{"webhook-id": "msg_other"})
    with pytest.raises(Exception, match="signature"):
        Webhook(secret).verify(received.body, tampered)


def test_a_failed_attempt_is_recorded_and_retried_with_the_same_id(
    database: Database, subscriber: Subscriber
) -> None:
    _, secret = subscribe(database, subscriber.url)
    job_id, _ = finish(database)
    (notification,) = notifications_of(database, job_id)
    subscriber.statuses = [500]
    clock = Clock(utcnow())

    assert deliver(database, notification.public_id, clock) == "pending"
    (pending,) = notifications_of(database, job_id)
    assert pending.last_error == "HTTP 500"
    assert pending.next_attempt_at == clock.now + timedelta(seconds=5)
    with database.transaction() as session:
        assert notification.public_id not in notifications.due_notifications(
            session, now=clock.now + timedelta(seconds=4)
        )
    with database.transaction() as session:
        assert notification.public_id in notifications.due_notifications(
            session, now=clock.now + timedelta(seconds=6)
        )

    clock.now += timedelta(seconds=6)
    assert deliver(database, notification.public_id, clock) == "delivered"
    first, second = subscriber.received
    assert first.body == second.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert Webhook(secret).verify(second.body, second.headers)["type"] == "job.completed"
    with database.transaction() as session:
        found = notifications.get_notification(session, notification.public_id)
        assert found is not None
        attempts = notifications.attempts_of(session, found)
        assert [(a.outcome, a.status_code) for a in attempts] == [
            ("failed", 500),
            ("delivered", 200),
        ]


def test_an_operator_replays_what_failed_for_good(
    database: Database,
    subscriber: Subscriber,
    client: Any,
    auth: dict[str, str],
    enqueuer: RecordingEnqueuer,
) -> None:
    subscription_id, _ = subscribe(database, subscriber.url)
    job_id, _ = finish(database)
    (notification,) = notifications_of(database, job_id)
    subscriber.statuses = [503] * notifications.MAX_ATTEMPTS
    clock = Clock(utcnow())
    states = []
    for _ in range(notifications.MAX_ATTEMPTS):
        states.append(deliver(database, notification.public_id, clock))
        clock.now += timedelta(days=1)
    assert states[-1] == "failed" and set(states[:-1]) == {"pending"}
    assert deliver(database, notification.public_id, clock) is None  # given up

    listed = client.get(
        f"/api/v1/notifications?subscription_id={subscription_id}&state=failed", headers=auth
    ).get_json()["notifications"]
    assert [n["id"] for n in listed] == [notification.public_id]
    replayed = client.post(f"/api/v1/notifications/{notification.public_id}/replay", headers=auth)
    assert replayed.status_code == 202 and replayed.get_json()["state"] == "pending"
    assert enqueuer.sent == [(DELIVER_NOTIFICATION, (notification.public_id,))]

    assert deliver(database, notification.public_id, clock) == "delivered"
    shown = client.get(f"/api/v1/notifications/{notification.public_id}", headers=auth).get_json()
    assert shown["state"] == "delivered" and shown["payload"]["type"] == "job.completed"
    assert len(shown["attempt_log"]) == notifications.MAX_ATTEMPTS + 1
    assert shown["attempt_log"][0]["status_code"] == 503
    missing = client.post("/api/v1/notifications/msg_nope/replay", headers=auth)
    assert missing.status_code == 404


def test_subscriptions_through_the_api(client: Any, auth: dict[str, str]) -> None:
    created = client.post(
        "/api/v1/subscriptions",
        json={"url": "https://tools.example/hook", "statuses": ["completed"]},
        headers=auth,
    )
    assert created.status_code == 201
    body = created.get_json()
    assert body["secret"].startswith("whsec_") and body["statuses"] == ["completed"]
    assert created.headers["Location"] == f"/api/v1/subscriptions/{body['id']}"

    listed = client.get("/api/v1/subscriptions", headers=auth).get_json()["subscriptions"]
    assert [s["id"] for s in listed] == [body["id"]]
    assert "secret" not in listed[0]
    one = client.get(f"/api/v1/subscriptions/{body['id']}", headers=auth).get_json()
    assert one["url"] == "https://tools.example/hook" and "secret" not in one

    assert client.delete(f"/api/v1/subscriptions/{body['id']}", headers=auth).status_code == 204
    assert client.delete(f"/api/v1/subscriptions/{body['id']}", headers=auth).status_code == 404
    assert client.get("/api/v1/subscriptions").status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "url"),
        ({"url": "ftp://x.example/hook"}, "url"),
        ({"url": "https:///hook"}, "url"),
        ({"url": "https://x.example", "statuses": ["done"]}, "statuses"),
        ({"url": "https://x.example", "statuses": []}, "statuses"),
        ({"url": "https://x.example", "metadata": ["team"]}, "metadata"),
        ({"url": "https://x.example", "secret": "mine"}, "secret"),
        (["https://x.example"], "body"),
    ],
)
def test_bad_subscriptions_name_the_field(
    client: Any, auth: dict[str, str], body: Any, field: str
) -> None:
    response = client.post("/api/v1/subscriptions", json=body, headers=auth)
    assert response.status_code in (400, 422)
    assert response.get_json()["error"]["field"] == field
    assert client.get("/api/v1/subscriptions", headers=auth).get_json()["subscriptions"] == []
