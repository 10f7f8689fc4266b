"""Subscriptions to finished jobs, and the notifications sent to them (list, show, replay)."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Blueprint, jsonify, request

from webhook_app.extensions import services
from webhook_app.models import Notification, NotificationAttempt, Subscription, utcnow
from webhook_app.services import jobs, notifications, subscriptions
from webhook_app.web.auth import WRITE, authenticate, requires_scope
from webhook_app.web.errors import ErrorAnswer, invalid
from webhook_app.web.serialize import _time

blueprint = Blueprint("notifications", __name__, url_prefix="/api/v1")
blueprint.before_request(authenticate)

STATES = (notifications.PENDING, notifications.DELIVERED, notifications.FAILED)


def subscription_json(subscription: Subscription) -> dict[str, Any]:
    return {
        "id": subscription.public_id,
        "url": subscription.url,
        "description": subscription.description,
        "statuses": subscription.statuses,
        "metadata": subscription.metadata_filter,
        "created_at": _time(subscription.created_at),
    }


def notification_json(notification: Notification) -> dict[str, Any]:
    return {
        "id": notification.public_id,
        "subscription_id": notification.subscription.public_id,
        "job_id": notification.job.public_id,
        "type": notification.event_type,
        "state": notification.state,
        "attempts": notification.attempts,
        "last_error": notification.last_error,
        "created_at": _time(notification.created_at),
        "delivered_at": _time(notification.delivered_at),
        "next_attempt_at": _time(notification.next_attempt_at),
    }


def attempt_json(attempt: NotificationAttempt) -> dict[str, Any]:
    return {
        "at": _time(attempt.at),
        "outcome": attempt.outcome,
        "status_code": attempt.status_code,
        "error": attempt.error,
        "duration_ms": attempt.duration_ms,
    }


_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _not_found(what: str, public_id: str) -> ErrorAnswer:
    return ErrorAnswer(404, "not_found", f"no {what} {public_id[:64]!r}")


def _id(value: str) -> str:
    """The id if it has the shape of one, else a value that matches nothing (never queried
    with characters the database refuses)."""
    return value if _ID.fullmatch(value) else "-"


@blueprint.post("/subscriptions")
@requires_scope(WRITE)
def create_subscription() -> Any:
    payload = request.get_json(silent=True)
    if payload is None:
        raise invalid("body", "must be a JSON object (Content-Type: application/json)", 400)
    with services().db.transaction() as session:
        subscription = subscriptions.create_subscription(session, payload, now=utcnow())
        # The secret is shown here once; it is never listed again.
        body = {**subscription_json(subscription), "secret": subscription.secret}
    return jsonify(body), 201, {"Location": f"/api/v1/subscriptions/{body['id']}"}


@blueprint.get("/subscriptions")
def list_subscriptions() -> Any:
    with services().db.transaction() as session:
        found = subscriptions.list_subscriptions(session)
        return jsonify({"subscriptions": [subscription_json(s) for s in found]})


@blueprint.get("/subscriptions/<subscription_id>")
def get_subscription(subscription_id: str) -> Any:
    with services().db.transaction() as session:
        subscription = subscriptions.get_subscription(session, _id(subscription_id))
        if subscription is None:
            raise _not_found("subscription", subscription_id)
        return jsonify(subscription_json(subscription))


@blueprint.delete("/subscriptions/<subscription_id>")
@requires_scope(WRITE)
def delete_subscription(subscription_id: str) -> Any:
    with services().db.transaction() as session:
        if not subscriptions.delete_subscription(session, _id(subscription_id)):
            raise _not_found("subscription", subscription_id)
    return "", 204


@blueprint.get("/notifications")
def list_notifications() -> Any:
    args = request.args
    state = args.get("state") or None
    if state is not None and state not in STATES:
        raise invalid("state", f"must be one of {', '.join(STATES)}", 400)
    try:
        limit = int(args.get("limit", 100))
    except ValueError:
        raise invalid("limit", "must be an integer", 400) from None
    if not 1 <= limit <= 500:
        raise invalid("limit", "must be between 1 and 500", 400)
    with services().db.transaction() as session:
        job = subscription = None
        if args.get("job_id"):
            job = jobs.get_job(session, _id(args["job_id"]))
            if job is None:
                raise _not_found("job", args["job_id"])
        if args.get("subscription_id"):
            subscription = subscriptions.get_subscription(session, _id(args["subscription_id"]))
            if subscription is None:
                raise _not_found("subscription", args["subscription_id"])
        found = notifications.list_notifications(
            session, job=job, subscription=subscription, state=state, limit=limit
        )
        return jsonify({"notifications": [notification_json(n) for n in found]})


@blueprint.get("/notifications/<notification_id>")
def get_notification(notification_id: str) -> Any:
    with services().db.transaction() as session:
        notification = notifications.get_notification(session, _id(notification_id))
        if notification is None:
            raise _not_found("notification", notification_id)
        attempts = notifications.attempts_of(session, notification)
        return jsonify(
            {
                **notification_json(notification),
                "payload": json.loads(notification.payload),
                "attempt_log": [attempt_json(a) for a in attempts],
            }
        )


@blueprint.post("/notifications/<notification_id>/replay")
@requires_scope(WRITE)
def replay_notification(notification_id: str) -> Any:
    with services().db.transaction() as session:
        notification = notifications.replay(session, _id(notification_id), now=utcnow())
        if notification is None:
            raise _not_found("notification", notification_id)
        body = notification_json(notification)
    return jsonify(body), 202
