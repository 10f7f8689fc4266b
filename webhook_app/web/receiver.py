"""POST /callbacks/<job_id>/<token>: authenticate, keep, merge, answer fast.

Answers: 200 when the delivery was applied or changed nothing (duplicates included);
202 when it was kept but could not be understood (or reported a failure): the job is left as
it was and a confirmation with imageGenerator.get is queued. A 4xx would tell a retrying
sender to give up or to resend a body that will never parse, and the delivery is not the
sender's fault to fix. 409 when it names another generation than the job's. 404, identical
in body and in the work done for a wrong token, an unknown job and a malformed URL. 403 from
outside CALLBACK_ALLOWED_NETWORKS. 413 over the size limit. 503 when it cannot be stored.
Refused attempts are counted and logged, never stored.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.exc import DBAPIError, IntegrityError

from webhook_app.extensions import services
from webhook_app.infra import metrics
from webhook_app.infra.callback_tokens import verify_callback_token
from webhook_app.infra.refusals import CALLBACK_NOT_FOUND, CALLBACK_SOURCE, refuse, source_allowed
from webhook_app.models import is_public_id, new_public_id, utcnow
from webhook_app.services.deliveries import (
    KEPT_HEADERS,
    Arrival,
    Received,
    keep_unapplied,
    receive_delivery,
)
from webhook_app.services.progress import NEEDS_CONFIRMATION, Outcome
from webhook_app.web.errors import ErrorAnswer

log = logging.getLogger(__name__)
blueprint = Blueprint("receiver", __name__)

# Answered, not raised: each answer is counted with its outcome.
NOT_FOUND = ErrorAnswer(404, "not_found", "no such callback")
FORBIDDEN = ErrorAnswer(403, "forbidden", "callbacks are not accepted from this address")
# Signed in place of a malformed id, so refusing one costs what refusing a wrong token does.
STAND_IN_ID = new_public_id()


def _refusal(job_id: str, token: str) -> Response | None:
    """The answer refusing this attempt, or None when it may go on to the database."""
    settings = services().settings
    source = request.remote_addr
    if not source_allowed(source, settings.callback_allowed_networks):
        refuse(CALLBACK_SOURCE, source)
        return FORBIDDEN.response()
    well_formed = is_public_id(job_id)
    signed_id = job_id if well_formed else STAND_IN_ID
    if not (verify_callback_token(settings.callback_secrets, signed_id, token) and well_formed):
        refuse(CALLBACK_NOT_FOUND, source)
        return NOT_FOUND.response()
    return None


@blueprint.post("/callbacks/<path:anything>")
def receive_malformed(anything: str) -> Any:
    """Any other callback path: refused exactly like a wrong token."""
    return _refusal("", anything) or NOT_FOUND.response()


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
    refusal = _refusal(job_id, token)
    if refusal is not None:
        return refusal, refusal.status_code, "refused"
    svc = services()
    redact = svc.redactor
    arrival = Arrival(
        # A body or header that quotes a secret (a callback URL, say) is kept without it.
        body=redact.redact_bytes(request.get_data(cache=False)),
        content_type=request.content_type,
        # Only the headers a delivery keeps are read (and redacted).
        headers={
            name: redact(value)
            for name, value in request.headers.items()
            if name.lower() in KEPT_HEADERS
        },
        source_addr=request.remote_addr,
    )
    now = utcnow()
    try:
        with svc.db.transaction() as session:
            received = receive_delivery(
                session, job_id, arrival, now=now, recheck_after=svc.settings.recheck_after
            )
    except Exception as exc:
        if isinstance(exc, DBAPIError) and not isinstance(exc, IntegrityError):
            raise  # answered 503 by the app: the sender retries
        # A bug in merging, or a body that claims another job's generation or items (a
        # unique key says no), must not lose the delivery: keep it apart and confirm by polling.
        log.exception("callback for job %s could not be applied", job_id)
        with svc.db.transaction() as session:
            job = keep_unapplied(session, job_id, arrival, type(exc).__name__, now=now)
        if job is None:
            return NOT_FOUND.response(), 404, "unknown_job"
        received = Received(job, Outcome.ERROR, duplicate=False, completed=False)
    if received is None:  # a valid token for a job that is no more
        refuse(CALLBACK_NOT_FOUND, request.remote_addr)
        return NOT_FOUND.response(), 404, "unknown_job"
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
