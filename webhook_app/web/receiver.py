"""POST /callbacks/<job_id>/<token>: authenticate, keep, answer. Nothing else.

The token is checked without the database; then one statement keeps the delivery (or counts
a repeat of it) and commits. What it says is merged later, in batches, by the appliers
(`services.applying`), which give it its outcome: the deliveries API shows it.

Answers: 200 once the delivery is stored and committed, whatever its body says (a body that
cannot be understood is not the sender's fault to fix, and a 4xx would only make it resend
or give up). 404, identical in body and in the work done for a wrong token, an unknown job
and a malformed URL. 403 from outside CALLBACK_ALLOWED_NETWORKS. 413 over the size limit.
503 when it cannot be stored, so that the sender tries again. Refused attempts are counted
and logged, never stored.
"""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Blueprint, Response, request
from sqlalchemy.exc import DBAPIError

from webhook_app.extensions import services
from webhook_app.infra import logs, metrics
from webhook_app.infra.callback_tokens import verify_callback_token
from webhook_app.infra.refusals import CALLBACK_NOT_FOUND, CALLBACK_SOURCE, refuse, source_allowed
from webhook_app.models import is_public_id, new_public_id, utcnow
from webhook_app.services.deliveries import KEPT_HEADERS, Arrival, store_delivery
from webhook_app.web.errors import ErrorAnswer

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
        response, outcome = _receive(job_id, token)
        return response
    except DBAPIError:
        outcome = "database_unavailable"
        raise
    finally:
        metrics.CALLBACKS.labels(outcome=outcome).inc()
        metrics.CALLBACK_SECONDS.observe(time.perf_counter() - started)
        # Said on the request's own line (web.observe): one line per callback.
        logs.bind(job_id=job_id[:64], outcome=outcome)


def _receive(job_id: str, token: str) -> tuple[Response, str]:
    refusal = _refusal(job_id, token)
    if refusal is not None:
        return refusal, "refused"
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
    with svc.db.connection(writes=True) as connection:
        count = store_delivery(connection, job_id, arrival, now=utcnow())
    if count is None:  # a valid token for a job that is no more
        refuse(CALLBACK_NOT_FOUND, request.remote_addr)
        return NOT_FOUND.response(), "unknown_job"
    if count > 1:
        return Response(DUPLICATE, mimetype="application/json"), "duplicate"
    return Response(STORED, mimetype="application/json"), "stored"


# The two answers a stored delivery gets, serialized once.
STORED = json.dumps({"received": True, "duplicate": False})
DUPLICATE = json.dumps({"received": True, "duplicate": True})
