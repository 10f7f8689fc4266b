"""POST /callbacks/<job_id>/<token>: authenticate, keep, answer. Nothing else.

The token is checked without the database; then one statement keeps the delivery (or counts
a repeat of it) and commits. What it says is merged later, in batches, by the appliers
(`services.applying`), which give it its outcome: the deliveries API shows it.

Answers: 200 once the delivery is stored and committed, whatever its body says (a body that
cannot be understood is not the sender's fault to fix, and a 4xx would only make it resend
or give up). 404, identical in body and in the work done for a wrong token, an unknown job
and a malformed URL. 403 from outside CALLBACK_ALLOWED_NETWORKS. 413 over the size limit.
405 for any other method. 503 when it cannot be stored, so that the sender tries again.
Refused attempts are counted and logged, never stored.

The receiver is a WSGI layer in front of the Flask app, not a view: a callback needs none of
Flask's request machinery (its request context, routing, hooks and response object), which
cost as much CPU as the rest of the callback together. It gives the answers, headers, log
line and metrics the app gives any other request; every request outside /callbacks/ goes on
to the app.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, InternalServerError, MethodNotAllowed
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import get_input_stream

from webhook_app.infra import logs, metrics
from webhook_app.infra.callback_tokens import verify_callback_token
from webhook_app.infra.refusals import CALLBACK_NOT_FOUND, CALLBACK_SOURCE, refuse, source_allowed
from webhook_app.models import is_public_id, new_public_id, utcnow
from webhook_app.services.deliveries import (
    KEPT_HEADERS,
    Arrival,
    delivery_statement,
    store_delivery,
)
from webhook_app.web.errors import ErrorAnswer, database_down, http_error
from webhook_app.web.headers import plain_answer_headers
from webhook_app.web.observe import log_request, start_request

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from webhook_app.extensions import Services

log = logging.getLogger(__name__)

PREFIX = "/callbacks/"
ROUTE = "/callbacks/<job_id>/<token>"
MALFORMED = "/callbacks/<path:anything>"  # any other path below PREFIX: refused as a wrong token
ROUTES = ((ROUTE, "POST"), (MALFORMED, "POST"))

NOT_FOUND = ErrorAnswer(404, "not_found", "no such callback")
FORBIDDEN = ErrorAnswer(403, "forbidden", "callbacks are not accepted from this address")
NOT_ALLOWED = http_error(MethodNotAllowed())
NOT_ALLOWED.headers["Allow"] = "POST"
# Signed in place of a malformed id, so refusing one costs what refusing a wrong token does.
STAND_IN_ID = new_public_id()
# The headers a delivery keeps, as the request names them in the WSGI environ.
_KEPT = tuple(
    (
        name.title(),
        "CONTENT_TYPE" if name == "content-type" else "HTTP_" + name.upper().replace("-", "_"),
    )
    for name in KEPT_HEADERS
)

_DATABASE_ERRORS: tuple[type[Exception], ...] = (DBAPIError, PoolTimeout)


class Receiver:
    """The callback receiver, in front of `app` (the Flask app's WSGI callable)."""

    def __init__(self, app: WSGIApplication, services: Services) -> None:
        self.app = app
        settings = services.settings
        self.secrets = settings.callback_secrets
        self.networks = settings.callback_allowed_networks
        self.max_bytes = settings.max_callback_bytes
        self.redact = services.redactor
        self.statement = delivery_statement(services.db)
        self.database_errors = (*_DATABASE_ERRORS, self.statement.driver_errors)
        https = settings.public_base_url.startswith("https://")
        self.answer_headers = plain_answer_headers(https=https)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if not path.startswith(PREFIX):
            return self.app(environ, start_response)
        started = time.perf_counter()
        request_id = start_request(environ.get("HTTP_X_REQUEST_ID", ""))
        try:
            job_id, slash, token = path[len(PREFIX) :].partition("/")
            route = ROUTE
            if not (job_id and slash and token) or "/" in token:
                job_id, token, route = "", path[len(PREFIX) :], MALFORMED
            method = environ.get("REQUEST_METHOD", "")
            if method == "POST":
                answer = self._receive(environ, job_id, token)
                metrics.CALLBACKS.labels(outcome=answer.outcome).inc()
                metrics.CALLBACK_SECONDS.observe(time.perf_counter() - started)
            else:
                answer = _Answer(NOT_ALLOWED)
            # Said on the request's own line: one line per callback.
            logs.bind(job_id=job_id[:64] or None, outcome=answer.outcome or None)
            start_response(
                f"{answer.status} {HTTP_STATUS_CODES[answer.status].upper()}",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(answer.body))),
                    *answer.headers,
                    ("X-Request-ID", request_id),
                    *self.answer_headers,
                ],
            )
            log_request(method, route, answer.status, time.perf_counter() - started)
            return [answer.body]
        finally:
            logs.clear()

    def _receive(self, environ: WSGIEnvironment, job_id: str, token: str) -> _Answer:
        try:
            return self._keep(environ, job_id, token)
        except HTTPException as exc:  # over the size limit
            return _Answer(http_error(exc), "too_large")
        except self.database_errors as exc:
            return _Answer(database_down(exc), "database_unavailable")
        except Exception:
            log.exception("a callback could not be received")
            return _Answer(http_error(InternalServerError()), "error")

    def _keep(self, environ: WSGIEnvironment, job_id: str, token: str) -> _Answer:
        source = environ.get("REMOTE_ADDR")
        if not source_allowed(source, self.networks):
            refuse(CALLBACK_SOURCE, source)
            return _FORBIDDEN
        well_formed = is_public_id(job_id)
        signed_id = job_id if well_formed else STAND_IN_ID
        if not (verify_callback_token(self.secrets, signed_id, token) and well_formed):
            refuse(CALLBACK_NOT_FOUND, source)
            return _NOT_FOUND
        body = get_input_stream(environ, max_content_length=self.max_bytes).read()
        redact = self.redact
        arrival = Arrival(
            # A body or header that quotes a secret (a callback URL, say) is kept without it.
            body=redact.redact_bytes(body),
            content_type=environ.get("CONTENT_TYPE") or None,
            headers={name: redact(environ[key]) for name, key in _KEPT if key in environ},
            source_addr=source,
        )
        count = store_delivery(self.statement, job_id, arrival, now=utcnow())
        if count is None:  # a valid token for a job that is no more
            refuse(CALLBACK_NOT_FOUND, source)
            return _UNKNOWN_JOB
        return _DUPLICATE if count > 1 else _STORED


class _Answer:
    """What the receiver answers, and the outcome it counts and logs."""

    __slots__ = ("body", "headers", "outcome", "status")

    def __init__(self, error: ErrorAnswer | None, outcome: str = "", body: bytes = b"") -> None:
        self.status = error.status if error else 200
        self.body = error.encoded() if error else body
        self.headers = list(error.headers.items()) if error else []
        self.outcome = outcome


# The answers that do not depend on the request, made once.
_STORED = _Answer(None, "stored", json.dumps({"received": True, "duplicate": False}).encode())
_DUPLICATE = _Answer(None, "duplicate", json.dumps({"received": True, "duplicate": True}).encode())
_NOT_FOUND = _Answer(NOT_FOUND, "refused")
_UNKNOWN_JOB = _Answer(NOT_FOUND, "unknown_job")
_FORBIDDEN = _Answer(FORBIDDEN, "refused")
