"""Telling subscribers that a job has finished, signed per Standard Webhooks.

A notification is written in the same transaction as the job's terminal transition (so it
cannot be lost), then delivered by a task; failures are retried on the schedule the
specification suggests, every attempt is recorded, and an operator may replay any of them.
The body is fixed when the notification is made; only its timestamp and signature change
from one attempt to the next, and its webhook-id never does.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import requests
from sqlalchemy import event, select
from sqlalchemy.orm import Session, selectinload

from webhook_app.infra import metrics
from webhook_app.infra.db import Database, after_commit
from webhook_app.infra.queue import DELIVER_NOTIFICATION
from webhook_app.infra.signing import signed_headers
from webhook_app.models import Job, JobItem, Notification, NotificationAttempt, Subscription
from webhook_app.services.archive import image_path
from webhook_app.services.subscriptions import wants

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
# Delays before the 2nd, 3rd... attempt (the Standard Webhooks suggestion): about a day.
RETRY_DELAYS = tuple(timedelta(seconds=s) for s in (5, 300, 1800, 7200, 18000, 36000, 36000))
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
LEASE = timedelta(minutes=5)
USER_AGENT = "webhook-app-notifications/1"


def _time(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def job_summary(job: Job, status: str, base_url: str = "") -> dict[str, Any]:
    """What a finished job's subscribers and hook are told; paths made absolute by base_url."""
    return {
        "id": job.public_id,
        "status": status,
        "metadata": job.meta,
        "generation_uuid": job.generation_uuid,
        "finished_at": _time(job.finished_at),
        "items": [
            {
                "uuid": item.uuid,
                "dp_item_id": item.dp_item_id,
                "image_url": base_url + image_path(job.public_id, item.uuid),
                "preview_url": item.preview_url,
                "archive": item.archive.state if item.archive else None,
            }
            for item in job.items
        ],
        "url": f"{base_url}/api/v1/jobs/{job.public_id}",
    }


_SUBSCRIPTIONS = select(Subscription).order_by(Subscription.id)


def _subscriptions(session: Session) -> list[Subscription]:
    """Every subscription, read once per transaction (a batch of callbacks finishes many jobs)."""
    if _SUBSCRIBED not in session.info:
        with session.no_autoflush:  # the job's pending changes are flushed once, at the commit
            session.info[_SUBSCRIBED] = session.scalars(_SUBSCRIPTIONS).all()
    return list(session.info[_SUBSCRIBED])


_SUBSCRIBED = "webhook_app.subscriptions"


def known_subscriptions(session: Session, subscriptions: Sequence[Subscription]) -> None:
    """Every subscription, as the caller read them in this transaction (or found there are
    none): `notify_finished` need not read them."""
    session.info.setdefault(_SUBSCRIBED, list(subscriptions))


@event.listens_for(Session, "after_transaction_end")
def _forget_subscriptions(session: Session, _transaction: Any) -> None:
    session.info.pop(_SUBSCRIBED, None)


def notify_finished(session: Session, job: Job, status: str, *, now: datetime) -> None:
    """Write one notification per interested subscriber, to be sent after the commit."""
    # A job reaches each status once (transitions only go forward), so there is one
    # notification per subscriber and event, as the unique constraint holds.
    event_type = f"job.{status}"
    for subscription in _subscriptions(session):
        if not wants(subscription, job, status):
            continue
        payload = {"type": event_type, "timestamp": _time(now), "data": job_summary(job, status)}
        notification = Notification(
            public_id=f"msg_{uuid.uuid4().hex}",
            subscription_id=subscription.id,
            job_id=job.id,
            event_type=event_type,
            payload=json.dumps(payload, separators=(",", ":")),
            state=PENDING,
            attempts=0,
            created_at=now,
            next_attempt_at=now + LEASE,
        )
        session.add(notification)
        after_commit(session, DELIVER_NOTIFICATION, notification.public_id)


def notify_all_finished(
    session: Session, finished: Sequence[tuple[int, str]], *, now: datetime
) -> None:
    """`notify_finished` for jobs their writer changed with plain statements (the applier's
    batches): they are read as Jobs only when there are subscriptions."""
    if not finished or not _subscriptions(session):
        return
    query = (
        select(Job)
        .where(Job.id.in_([job_id for job_id, _ in finished]))
        .options(selectinload(Job.items).selectinload(JobItem.archive))
    )
    jobs = {job.id: job for job in session.scalars(query)}
    for job_id, status in finished:
        notify_finished(session, jobs[job_id], status, now=now)


def render_body(payload: str, base_url: str) -> bytes:
    """The exact bytes sent: the stored payload with our paths made absolute."""
    message = json.loads(payload)
    data = message["data"]
    data["url"] = base_url + data["url"]
    for item in data["items"]:
        item["image_url"] = base_url + item["image_url"]
    return json.dumps(message, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Outgoing:
    url: str
    secret: str
    payload: str


def _locked(session: Session, public_id: str) -> Notification | None:
    return session.scalar(
        select(Notification)
        .where(Notification.public_id == public_id)
        .with_for_update(of=Notification)
    )


def start_attempt(session: Session, public_id: str, *, now: datetime) -> Outgoing | None:
    notification = _locked(session, public_id)
    if notification is None or notification.state != PENDING:
        return None
    notification.attempts += 1
    notification.next_attempt_at = now + LEASE
    subscription = notification.subscription
    return Outgoing(subscription.url, subscription.secret, notification.payload)


def record_attempt(
    session: Session,
    public_id: str,
    *,
    status_code: int | None,
    error: str | None,
    duration_ms: int,
    now: datetime,
) -> str:
    """Keep the attempt; deliver, reschedule or give up; return the notification's state."""
    notification = _locked(session, public_id)
    if notification is None:
        return FAILED
    delivered = error is None
    session.add(
        NotificationAttempt(
            notification_id=notification.id,
            at=now,
            outcome=DELIVERED if delivered else FAILED,
            status_code=status_code,
            error=error,
            duration_ms=duration_ms,
        )
    )
    if notification.state != PENDING:
        return notification.state
    if delivered:
        notification.state, notification.delivered_at = DELIVERED, now
        notification.next_attempt_at, notification.last_error = None, None
    elif notification.attempts < MAX_ATTEMPTS:
        notification.last_error = error
        notification.next_attempt_at = now + RETRY_DELAYS[notification.attempts - 1]
    else:
        notification.state, notification.last_error = FAILED, error
        notification.next_attempt_at = None
    return notification.state


def deliver(
    db: Database,
    http: requests.Session,
    public_id: str,
    *,
    clock: Callable[[], datetime],
    base_url: str,
    timeout: float,
) -> str | None:
    """One attempt at one notification; its state afterwards (None: nothing to do)."""
    with db.transaction() as session:
        outgoing = start_attempt(session, public_id, now=clock())
    if outgoing is None:
        return None
    body = render_body(outgoing.payload, base_url)
    headers = signed_headers(outgoing.secret, public_id, int(clock().timestamp()), body)
    headers.update({"Content-Type": "application/json", "User-Agent": USER_AGENT})
    started = time.perf_counter()
    status_code: int | None = None
    try:
        response = http.post(
            outgoing.url,
            data=body,
            headers=headers,
            timeout=(min(5.0, timeout), timeout),
            allow_redirects=False,  # the specification counts a redirect as a failure
        )
        response.close()
        status_code = response.status_code
        error = None if 200 <= status_code < 300 else f"HTTP {status_code}"
    except requests.RequestException as exc:
        error = f"{type(exc).__name__}"
    duration_ms = round((time.perf_counter() - started) * 1000)
    with db.transaction() as session:
        state = record_attempt(
            session,
            public_id,
            status_code=status_code,
            error=error,
            duration_ms=duration_ms,
            now=clock(),
        )
    metrics.NOTIFICATIONS.labels(outcome="retry" if state == PENDING else state).inc()
    return state


def replay(session: Session, public_id: str, *, now: datetime) -> Notification | None:
    """Send a notification again, whatever became of it, with a fresh attempt budget."""
    notification = _locked(session, public_id)
    if notification is None:
        return None
    notification.state = PENDING
    notification.attempts = 0
    notification.last_error = None
    notification.next_attempt_at = now + LEASE
    after_commit(session, DELIVER_NOTIFICATION, public_id)
    return notification


def due_notifications(session: Session, *, now: datetime, limit: int = 200) -> list[str]:
    """Pending notifications whose next attempt is due; leased as they go."""
    rows = session.scalars(
        select(Notification)
        .where(Notification.state == PENDING, Notification.next_attempt_at <= now)
        .order_by(Notification.next_attempt_at)
        .limit(limit)
        .with_for_update(of=Notification, skip_locked=True)
    ).all()
    for notification in rows:
        notification.next_attempt_at = now + LEASE
    return [notification.public_id for notification in rows]


def list_notifications(
    session: Session,
    *,
    job: Job | None = None,
    subscription: Subscription | None = None,
    state: str | None = None,
    limit: int = 100,
) -> Sequence[Notification]:
    query = (
        select(Notification)
        .options(selectinload(Notification.subscription), selectinload(Notification.job))
        .order_by(Notification.id.desc())
        .limit(limit)
    )
    if job is not None:
        query = query.where(Notification.job_id == job.id)
    if subscription is not None:
        query = query.where(Notification.subscription_id == subscription.id)
    if state is not None:
        query = query.where(Notification.state == state)
    return session.scalars(query).all()


def get_notification(session: Session, public_id: str) -> Notification | None:
    return session.scalar(select(Notification).where(Notification.public_id == public_id))


def attempts_of(session: Session, notification: Notification) -> Sequence[NotificationAttempt]:
    return session.scalars(
        select(NotificationAttempt)
        .where(NotificationAttempt.notification_id == notification.id)
        .order_by(NotificationAttempt.id)
    ).all()
