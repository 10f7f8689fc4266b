"""The query API under /api/v1: create jobs, read them, their deliveries and events."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any, TypeVar

from flask import Blueprint, current_app, jsonify, request

from webhook_app.app import error_body, services
from webhook_app.models import Job, is_public_id, utcnow
from webhook_app.payloads import PayloadError, parse_json
from webhook_app.services import budgets, jobs, operator, views
from webhook_app.states import JobStatus
from webhook_app.web import waiting
from webhook_app.web.auth import WRITE, authenticate, requires_scope
from webhook_app.web.serialize import delivery_json, event_json, job_json
from webhook_app.web.usage import request_budgets

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")
# A bad query parameter or header is a 400; a bad field of a job request a 422.
QUERY_FIELDS = ("body", "cursor", "Idempotency-Key", "created_after", "q", "wait")
MAX_QUERY_TEXT = 200
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)?", re.ASCII)
F = TypeVar("F", bound=Callable[..., Any])


def invalid(field: str, message: str, status: int = 422) -> Any:
    return jsonify(error_body("invalid_request", f"{field} {message}", field=field)), status


blueprint.before_request(authenticate)


@blueprint.errorhandler(jobs.InvalidRequest)
def _invalid_request(exc: jobs.InvalidRequest) -> Any:
    status = 400 if exc.field in QUERY_FIELDS else 422
    return invalid(exc.field, exc.message, status)


def _found(view: F) -> F:
    """Resolve <job_id> to a Job in a reading session, or answer 404."""

    @wraps(view)
    def wrapper(job_id: str) -> Any:
        with services().db.read() as session:
            job = views.job_view(session.connection(), job_id) if is_public_id(job_id) else None
            if job is None:
                return jsonify(error_body("not_found", f"no job {job_id[:64]!r}")), 404
            return view(session, job)

    return wrapper  # type: ignore[return-value]


@blueprint.post("/jobs")
@requires_scope(WRITE)
def create_job() -> Any:
    svc = services()
    if not request.is_json:
        return invalid("body", "must be a JSON object (Content-Type: application/json)", 400)
    try:
        payload = parse_json(request.get_data(), max_depth=jobs.MAX_BODY_DEPTH)
    except PayloadError as exc:
        return invalid("body", f"must be valid JSON ({exc})", 400)
    job_request = jobs.JobRequest.from_mapping(payload)
    key = request.headers.get("Idempotency-Key")
    try:
        with svc.db.transaction() as session:
            job, created = jobs.create_job(
                session,
                job_request,
                now=utcnow(),
                deadline=svc.settings.deadline,
                idempotency_key=key,
                budgets=request_budgets(),
            )
            body = job_json(views.view_of(job))
    except budgets.BudgetExceeded as exc:
        retry_after = str(exc.seconds_left(utcnow()))
        return jsonify({"error": exc.as_error()}), 429, {"Retry-After": retry_after}
    except jobs.IdempotencyConflict:
        message = "was already used for a different request"
        return jsonify(error_body("idempotency_conflict", f"Idempotency-Key {message}")), 409
    headers = {"Location": body["links"]["self"]}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return jsonify(body), 202, headers


def _created_after() -> datetime | None:
    if "created_after" not in request.args:
        return None
    raw = request.args["created_after"].strip().upper()
    # An unescaped "+" in a query string arrives as a space.
    raw = re.sub(r"(T[\d:.]+) (\d\d:\d\d)$", r"\1+\2", raw)
    try:
        if not TIMESTAMP.fullmatch(raw):  # a date alone is not an instant
            raise ValueError(raw)
        created_after = datetime.fromisoformat(raw)
        if created_after.tzinfo is None:
            created_after = created_after.replace(tzinfo=UTC)
        # Refuse what cannot be stated in UTC (year 9999 at a negative offset).
        return created_after.astimezone(UTC)
    except (ValueError, OverflowError):
        raise jobs.InvalidRequest("created_after", "must be an ISO-8601 date and time") from None


def _text_filter() -> str | None:
    q = request.args.get("q") or None
    if q is not None and len(q) > MAX_QUERY_TEXT:
        raise jobs.InvalidRequest("q", f"must be at most {MAX_QUERY_TEXT} characters")
    return q


@blueprint.get("/jobs")
def list_jobs() -> Any:
    args = request.args
    status = args.get("status")
    if status is not None and status not in {s.value for s in JobStatus}:
        return invalid("status", f"must be one of {', '.join(s.value for s in JobStatus)}", 400)
    created_after, prompt_contains = _created_after(), _text_filter()
    try:
        limit = int(args.get("limit", 50))
    except ValueError:
        return invalid("limit", "must be an integer", 400)
    if not 1 <= limit <= jobs.MAX_PAGE:
        return invalid("limit", f"must be between 1 and {jobs.MAX_PAGE}", 400)
    with services().db.read() as session:
        page = jobs.list_jobs(
            session,
            status=status,
            created_after=created_after,
            limit=limit,
            cursor=args.get("cursor") or None,
            prompt_contains=prompt_contains,
        )
        return jsonify({"jobs": [job_json(j) for j in page.jobs], "next_cursor": page.next_cursor})


def _waits(view: F) -> F:
    """Honour ?wait=N: hold the request until the job is terminal or N seconds pass."""

    @wraps(view)
    def wrapper(job_id: str) -> Any:
        cap = services().settings.max_wait
        seconds = waiting.requested_wait(request.args.get("wait"), cap)
        if seconds:
            waiters = current_app.extensions["webhook_app.waiters"]
            waiting.wait_until_settled(services().db, waiters, job_id[:64], seconds)
        response = current_app.make_response(view(job_id))
        response.headers[waiting.MAX_WAIT_HEADER] = f"{cap:g}"
        return response

    return wrapper  # type: ignore[return-value]


@blueprint.get("/jobs/<job_id>")
@_waits
@_found
def get_job(session: Any, job: views.JobView) -> Any:
    return jsonify(job_json(job))


@blueprint.get("/stats")
def stats() -> Any:
    """Jobs per status, with the same filters as the list."""
    created_after, prompt_contains = _created_after(), _text_filter()
    with services().db.read() as session:
        counts = jobs.count_by_status(
            session, created_after=created_after, prompt_contains=prompt_contains
        )
    return jsonify({"jobs": counts, "total": sum(counts.values())})


@blueprint.get("/jobs/<job_id>/deliveries")
@_found
def job_deliveries(session: Any, job: views.JobView) -> Any:
    return jsonify({"deliveries": [delivery_json(d) for d in jobs.deliveries_of(session, job)]})


@blueprint.get("/jobs/<job_id>/events")
@_found
def job_events(session: Any, job: views.JobView) -> Any:
    return jsonify({"events": [event_json(e) for e in jobs.events_of(session, job)]})


def _operator_action(action: Callable[..., Job], job_id: str, **kwargs: Any) -> Any:
    svc = services()
    not_found = jsonify(error_body("not_found", f"no job {job_id[:64]!r}")), 404
    if not is_public_id(job_id):
        return not_found
    try:
        with svc.db.transaction() as session:
            job = action(session, job_id, now=utcnow(), **kwargs)
            body = job_json(views.view_of(job))
    except LookupError:
        return not_found
    except operator.NotAllowed as exc:
        return jsonify(error_body("not_allowed", str(exc))), 409
    except budgets.BudgetExceeded as exc:
        retry_after = str(exc.seconds_left(utcnow()))
        return jsonify({"error": exc.as_error()}), 429, {"Retry-After": retry_after}
    return jsonify(body), 202, {"Location": body["links"]["self"]}


@blueprint.post("/jobs/<job_id>/refresh")
@requires_scope(WRITE)
def refresh_job(job_id: str) -> Any:
    """Poll the upstream now (202 with the job as it stands)."""
    return _operator_action(operator.refresh, job_id)


@blueprint.post("/jobs/<job_id>/retry")
@requires_scope(WRITE)
def retry_job(job_id: str) -> Any:
    """Submit a failed or timed-out job's request again (202 with the new job)."""
    return _operator_action(
        operator.retry, job_id, deadline=services().settings.deadline, budgets=request_budgets()
    )


@blueprint.post("/jobs/<job_id>/cancel")
@requires_scope(WRITE)
def cancel_job(job_id: str) -> Any:
    """Fail a job the upstream has not accepted (202 with the job)."""
    payload = request.get_json(silent=True)
    reason = payload.get("reason") if isinstance(payload, dict) else None
    return _operator_action(operator.cancel, job_id, reason=str(reason) if reason else None)
