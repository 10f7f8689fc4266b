"""POST /callbacks/<job_id>/<token>: authenticate, keep, merge, answer fast.

Answers: 200 when the delivery was applied or changed nothing (duplicates included);
202 when it was kept but could not be understood (or reported a failure): the job is left as
it was and a confirmation with imageGenerator.get is queued. A 4xx would tell a retrying
sender to give up or to resend a body that will never parse, and the delivery is not the
sender's fault to fix. 409 when it names another generation than the job's. 404, identical
for a wrong token and an unknown job. 413 over the size limit. 503 when it cannot be stored.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, jsonify, request
from sqlalchemy.exc import DBAPIError

from webhook_app import metrics
from webhook_app.app import error_body, services
from webhook_app.models import utcnow
from webhook_app.services.deliveries import Arrival, Received, keep_unapplied, receive_delivery
from webhook_app.services.progress import NEEDS_CONFIRMATION, Outcome
from webhook_app.tokens import verify_callback_token

log = logging.getLogger(__name__)
blueprint = Blueprint("receiver", __name__)

NOT_FOUND = error_body("not_found", "no such callback")


@blueprint.post("/callbacks/<job_id>/<token>")
def receive(job_id: str, token: str) -> Any:
    started, outcome = time.perf_counter(), "error"
    try:
        response, status, outcome = _receive(job_id, token)
        return response, status
    except DBAPIError:
        outcome = "database_unavailable"
        raise
    finally:
        elapsed = time.perf_counter() - started
        metrics.CALLBACKS.labels(outcome=outcome).inc()
        metrics.CALLBACK_SECONDS.observe(elapsed)
        log.info(
            "callback",
            extra={"job_id": job_id[:64], "outcome": outcome, "duration_ms": round(elapsed * 1000)},
        )


def _receive(job_id: str, token: str) -> tuple[Any, int, str]:
    svc = services()
    if not verify_callback_token(svc.settings.callback_secrets, job_id, token):
        log.warning("callback refused: bad token from %s", request.remote_addr)
        return jsonify(NOT_FOUND), 404, "refused"
    arrival = Arrival(
        body=request.get_data(cache=False),
        content_type=request.content_type,
        headers=dict(request.headers),
        source_addr=request.remote_addr,
    )
    now = utcnow()
    try:
        with svc.db.transaction() as session:
            received = receive_delivery(
                session, job_id, arrival, now=now, recheck_after=svc.settings.recheck_after
            )
    except DBAPIError:
        raise  # answered 503 by the app: the sender retries
    except Exception as exc:
        # A bug in merging must not lose the delivery: keep it apart and confirm by polling.
        log.exception("callback for job %s could not be applied", job_id)
        with svc.db.transaction() as session:
            job = keep_unapplied(session, job_id, arrival, type(exc).__name__, now=now)
        if job is None:
            return jsonify(NOT_FOUND), 404, "unknown_job"
        received = Received(job, Outcome.ERROR, duplicate=False, completed=False)
    if received is None:
        return jsonify(NOT_FOUND), 404, "unknown_job"
    outcome = "duplicate" if received.duplicate else received.outcome.value
    return jsonify(_answer(received)), _status(received), outcome


def _answer(received: Received) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "received": True,
        "outcome": received.outcome.value,
        "duplicate": received.duplicate,
    }
    if received.detail:
        answer["detail"] = received.detail
    return answer


def _status(received: Received) -> int:
    if received.outcome is Outcome.MISMATCH:
        return 409
    if received.outcome in NEEDS_CONFIRMATION:
        return 202
    return 200
