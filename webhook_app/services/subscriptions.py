"""Who is told when a job finishes: subscriptions with their own secret and filter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from webhook_app.infra.signing import new_secret
from webhook_app.models import Job, Subscription
from webhook_app.services.jobs import InvalidField, holds_nul
from webhook_app.states import TERMINAL

FIELDS = frozenset({"url", "statuses", "metadata", "description"})


def create_subscription(session: Session, data: Any, *, now: datetime) -> Subscription:
    """Validate and store a subscription; its secret is readable only on this object."""
    if not isinstance(data, Mapping):
        raise InvalidField("body", "must be a JSON object")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise InvalidField(unknown[0], "is not a known field")
    for name in sorted(FIELDS):
        if holds_nul(data.get(name)):
            raise InvalidField(name, "must not contain NUL characters")
    url = data.get("url")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise InvalidField("url", "must be an http(s) URL")
    if not urlsplit(url).hostname:
        raise InvalidField("url", "must name a host")
    if len(url) > 2048:
        raise InvalidField("url", "must be at most 2048 characters")
    statuses = data.get("statuses")
    terminal = sorted(s.value for s in TERMINAL)
    if statuses is not None and (
        not isinstance(statuses, list)
        or not statuses
        or any(status not in terminal for status in statuses)
    ):
        raise InvalidField("statuses", f"must be a non-empty list of {', '.join(terminal)}")
    metadata = data.get("metadata")
    if metadata is not None and (not isinstance(metadata, Mapping) or not metadata):
        raise InvalidField("metadata", "must be a non-empty JSON object")
    description = data.get("description")
    if description is not None and (not isinstance(description, str) or len(description) > 200):
        raise InvalidField("description", "must be a string of at most 200 characters")
    subscription = Subscription(
        url=url,
        secret=new_secret(),
        description=description,
        statuses=sorted(set(statuses)) if statuses else None,
        metadata_filter=dict(metadata) if metadata else None,
        created_at=now,
    )
    session.add(subscription)
    session.flush()
    return subscription


def list_subscriptions(session: Session) -> Sequence[Subscription]:
    return session.scalars(select(Subscription).order_by(Subscription.id)).all()


def get_subscription(session: Session, public_id: str) -> Subscription | None:
    return session.scalar(select(Subscription).where(Subscription.public_id == public_id))


def delete_subscription(session: Session, public_id: str) -> bool:
    """Remove it with its notifications; False if there is no such subscription."""
    subscription = get_subscription(session, public_id)
    if subscription is None:
        return False
    session.delete(subscription)
    return True


def wants(subscription: Subscription, job: Job, status: str) -> bool:
    """Whether this job's terminal status passes the subscription's filter."""
    if subscription.statuses and status not in subscription.statuses:
        return False
    wanted = subscription.metadata_filter or {}
    meta = job.meta or {}
    return all(key in meta and meta[key] == value for key, value in wanted.items())
