"""Error answers of the HTTP edge: one exception type, and the one place errors become answers.

A handler raises `ErrorAnswer`; the services' own errors (a wrong field, a full budget, an
action the job's state refuses, a reused idempotency key), werkzeug's and the database's are
translated here. Every answer has the documented shape
`{"error": {"code": ..., "message": ..., <fields such as "field">}}`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response, jsonify
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from webhook_app.models import utcnow
from webhook_app.services import budgets, jobs, operator

log = logging.getLogger(__name__)

# A wrong query parameter or header is a 400; a wrong field of a request's body a 422.
QUERY_FIELDS = (
    "body",
    "cursor",
    "Idempotency-Key",
    "created_after",
    "q",
    "wait",
    "changed_after",
    "status",
    "limit",
)


class ErrorAnswer(Exception):
    """An error the API answers: its HTTP status, its code, a message, and more fields."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = {"field": field, **extra} if field is not None else extra
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.fields}}

    def encoded(self) -> bytes:
        """The body as the app's JSON provider writes it (for answers made outside Flask)."""
        return (json.dumps(self.body(), separators=(",", ":")) + "\n").encode()

    def response(self) -> Response:
        response = jsonify(self.body())
        response.status_code = self.status
        response.headers.update(self.headers)
        return response


def invalid(field: str, message: str, status: int = 422) -> ErrorAnswer:
    """A wrong field, query parameter or header, named in the answer."""
    return ErrorAnswer(status, "invalid_request", f"{field} {message}", field=field)


def _invalid_field(exc: jobs.InvalidField) -> ErrorAnswer:
    return invalid(exc.field, exc.message, 400 if exc.field in QUERY_FIELDS else 422)


def _over_budget(exc: budgets.BudgetExceeded) -> ErrorAnswer:
    fields = exc.as_error()
    code, message = fields.pop("code"), fields.pop("message")
    retry_after = str(exc.seconds_left(utcnow()))
    return ErrorAnswer(429, code, message, headers={"Retry-After": retry_after}, **fields)


def _not_allowed(exc: operator.NotAllowed) -> ErrorAnswer:
    return ErrorAnswer(409, "not_allowed", str(exc))


def _idempotency_conflict(_: jobs.IdempotencyConflict) -> ErrorAnswer:
    return ErrorAnswer(
        409, "idempotency_conflict", "Idempotency-Key was already used for a different request"
    )


def http_error(exc: HTTPException) -> ErrorAnswer:
    name = (exc.name or "error").lower().replace(" ", "_")
    return ErrorAnswer(exc.code or 500, name, exc.description or exc.name or "")


def database_down(exc: Exception) -> ErrorAnswer:
    # The sender should try again later; nothing was half-written (the transaction was
    # rolled back when the session closed).
    log.error("database unavailable: %s", type(exc).__name__)
    return ErrorAnswer(
        503,
        "database_unavailable",
        "the database is unreachable; retry later",
        headers={"Retry-After": "5"},
    )


# What each error the edge lets through answers.
TRANSLATIONS: dict[type[Exception], Callable[[Any], ErrorAnswer]] = {
    jobs.InvalidField: _invalid_field,
    budgets.BudgetExceeded: _over_budget,
    operator.NotAllowed: _not_allowed,
    jobs.IdempotencyConflict: _idempotency_conflict,
    HTTPException: http_error,
    DBAPIError: database_down,
    PoolTimeout: database_down,
}


def init_app(app: Flask) -> None:
    """Answer every ErrorAnswer, and every error of TRANSLATIONS, in the documented shape."""
    app.register_error_handler(ErrorAnswer, ErrorAnswer.response)
    for kind, translate in TRANSLATIONS.items():
        app.register_error_handler(kind, _answering(translate))


def _answering(translate: Callable[[Any], ErrorAnswer]) -> Callable[[Any], Response]:
    def handler(exc: Any) -> Response:
        return translate(exc).response()

    return handler
