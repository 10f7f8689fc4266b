"""The query API under /api/v1: create jobs, read them, their deliveries and events."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, jsonify, request

from webhook_app.depositphotos.payloads import PayloadError, parse_json
from webhook_app.extensions import services
from webhook_app.models import Job, is_public_id, utcnow
from webhook_app.services import feed, jobs, operator, views
from webhook_app.states import JobStatus
from webhook_app.web import waiting
from webhook_app.web.answers import AnswerCache
from webhook_app.web.auth import WRITE, authenticate, requires_scope
from webhook_app.web.errors import ErrorAnswer, invalid
from webhook_app.web.serialize import (
    batch_json,
    changes_json,
    delivery_json,
    event_json,
    job_etag,
    job_json,
    job_page_json,
    stats_json,
)
from webhook_app.web.usage import request_budgets

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")
MAX_QUERY_TEXT = 200
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)?", re.ASCII)
F = TypeVar("F", bound=Callable[..., Any])
# Seconds a poller is told to wait before asking again (304s, empty feed pages).
POLL_AGAIN = "5"
# A cache may keep a job answer, but must ask (If-None-Match) before each use.
REVALIDATE = "private, no-cache"


blueprint.before_request(authenticate)


def _bad_query(name: str, message: str) -> ErrorAnswer:
    """A query parameter is wrong, whatever its name (`metadata` is also a field of a job)."""
    return invalid(name, message, 400)


def _no_job(job_id: str) -> ErrorAnswer:
    return ErrorAnswer(404, "not_found", f"no job {job_id[:64]!r}")


def _json_body() -> Any:
    """The request's body as JSON, or a 400 naming `body`."""
    if not request.is_json:
        raise jobs.InvalidField("body", "must be a JSON object (Content-Type: application/json)")
    try:
        return parse_json(request.get_data(), max_depth=jobs.MAX_BODY_DEPTH)
    except PayloadError as exc:
        raise jobs.InvalidField("body", f"must be valid JSON ({exc})") from None


def _found(view: F) -> F:
    """Resolve <job_id> to a Job in a reading session, or answer 404."""

    @wraps(view)
    def wrapper(job_id: str) -> Any:
        with services().db.read() as session:
            job = views.job_view(session.connection(), job_id) if is_public_id(job_id) else None
            if job is None:
                raise _no_job(job_id)
            return view(session, job)

    return wrapper  # type: ignore[return-value]


@blueprint.post("/jobs")
@requires_scope(WRITE)
def create_job() -> Any:
    svc = services()
    job_request = jobs.JobRequest.from_mapping(_json_body())
    key = request.headers.get("Idempotency-Key")
    with svc.db.transaction() as session:
        job, created = jobs.create_job(
            session,
            job_request,
            now=utcnow(),
            deadline=svc.settings.deadline,
            idempotency_key=key,
            budgets=request_budgets(),
        )
        view = views.view_of(job)
        body = job_json(view)
    headers = {"Location": body["links"]["self"], "ETag": f'"{job_etag(view.version)}"'}
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
        raise jobs.InvalidField("created_after", "must be an ISO-8601 date and time") from None


def _text_filter() -> str | None:
    q = request.args.get("q") or None
    if q is not None and len(q) > MAX_QUERY_TEXT:
        raise jobs.InvalidField("q", f"must be at most {MAX_QUERY_TEXT} characters")
    return q


def _status() -> str | None:
    status = request.args.get("status")
    if status is not None and status not in {s.value for s in JobStatus}:
        statuses = ", ".join(s.value for s in JobStatus)
        raise jobs.InvalidField("status", f"must be one of {statuses}")
    return status


def _limit() -> int:
    try:
        limit = int(request.args.get("limit", 50))
    except ValueError:
        raise jobs.InvalidField("limit", "must be an integer") from None
    if not 1 <= limit <= jobs.MAX_PAGE:
        raise jobs.InvalidField("limit", f"must be between 1 and {jobs.MAX_PAGE}")
    return limit


def _not_modified(tag: str) -> Response:
    headers = {"ETag": f'"{tag}"', "Retry-After": POLL_AGAIN, "Cache-Control": REVALIDATE}
    # A 304 stands for a JSON answer: its headers (the policy among them) are that answer's.
    return Response(status=304, headers=headers, mimetype="application/json")


def _tagged(body: Any, tag: str) -> Response:
    return _revalidated(jsonify(body), tag)


def _tagged_body(body: bytes, tag: str) -> Response:
    """An answer serialized earlier (the same bytes `_tagged` made of it)."""
    return _revalidated(Response(body, mimetype="application/json"), tag)


def _revalidated(response: Response, tag: str) -> Response:
    response.set_etag(tag)
    response.headers["Cache-Control"] = REVALIDATE
    return response


@blueprint.get("/jobs")
def list_jobs() -> Any:
    if "changed_after" in request.args:
        return _changes()
    args = request.args
    for only_feed in ("wait", "metadata"):
        if only_feed in args:
            raise _bad_query(only_feed, "applies only to the changes feed (changed_after)")
    status, limit = _status(), _limit()
    created_after, prompt_contains = _created_after(), _text_filter()
    with services().db.read() as session:
        page = jobs.list_jobs(
            session,
            status=status,
            created_after=created_after,
            limit=limit,
            cursor=args.get("cursor") or None,
            prompt_contains=prompt_contains,
            known=_KnownWeakly(),
        )
    if page.unchanged:
        return _not_modified(page.tag)
    return _tagged(job_page_json(page.jobs, page.next_cursor), page.tag)


class _KnownWeakly:
    """The entity tags of If-None-Match, compared as it asks (weakly)."""

    def __contains__(self, tag: object) -> bool:
        return isinstance(tag, str) and request.if_none_match.contains_weak(tag)


def _metadata_filter() -> dict[str, Any] | None:
    raw = request.args.get("metadata")
    if not raw:
        return None
    try:
        value = parse_json(raw.encode(), max_depth=jobs.MAX_BODY_DEPTH)
    except PayloadError:
        value = None
    if not isinstance(value, dict) or not value:
        raise _bad_query("metadata", "must be a non-empty JSON object")
    return value


def _changes() -> Any:
    """The changes feed: `?changed_after=<cursor>` (or `now`, or `0`), optionally held."""
    args = request.args
    cursor = args["changed_after"]
    if "cursor" in args:
        raise jobs.InvalidField("cursor", "cannot be combined with changed_after")
    feed.decode(cursor)  # a bad cursor is refused before any wait
    filters: dict[str, Any] = {
        "limit": _limit(),
        "status": _status(),
        "created_after": _created_after(),
        "prompt_contains": _text_filter(),
        "metadata": _metadata_filter(),
    }
    seconds = waiting.requested_wait(args.get("wait"), services().settings.max_wait)
    db = services().db

    def read(after: str) -> feed.Changes:
        with db.connection() as connection:
            return feed.changes_since(connection, after, **filters)

    latest: list[feed.Changes] = []

    def arrived() -> bool:
        latest[:] = [read(latest[0].cursor if latest else cursor)]
        return bool(latest[0].jobs or latest[0].more)

    if seconds:
        waiting.hold(current_app.extensions["webhook_app.waiters"], seconds, arrived)
    if not latest:
        arrived()
    page = latest[0]
    body = changes_json(page.jobs, page.cursor, page.more)
    headers = {waiting.MAX_WAIT_HEADER: f"{services().settings.max_wait:g}"}
    if not (page.jobs or page.more):
        headers["Retry-After"] = POLL_AGAIN
    return jsonify(body), 200, headers


@blueprint.post("/jobs/batch-get")
def batch_get_jobs() -> Any:
    """Up to MAX_BATCH jobs by id in one request (a read: no write scope needed)."""
    payload = _json_body()
    ids = payload.get("ids") if isinstance(payload, dict) else None
    if not isinstance(payload, dict):
        raise invalid("body", "must be a JSON object", 400)
    if set(payload) - {"ids"}:
        raise invalid(sorted(set(payload) - {"ids"})[0], "is not a known field")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise invalid("ids", "must be a list of job ids")
    if len(ids) > jobs.MAX_BATCH:
        raise invalid("ids", f"must name at most {jobs.MAX_BATCH} jobs")
    with services().db.read() as session:
        found, missing = jobs.jobs_by_id(session, ids)
    return jsonify(batch_json(found, missing))


def _waits(view: F) -> F:
    """Honour ?wait=N: hold the request until the job is terminal or N seconds pass."""

    @wraps(view)
    def wrapper(job_id: str) -> Any:
        cap = services().settings.max_wait
        seconds = waiting.requested_wait(request.args.get("wait"), cap)
        if seconds:
            waiters = current_app.extensions["webhook_app.waiters"]
            waiting.wait_until_settled(services().db, waiters, job_id[:64], seconds)
        try:
            answer = view(job_id)
        except ErrorAnswer as refused:  # a missing job's answer tells the cap too
            answer = refused.response()
        response = current_app.make_response(answer)
        response.headers[waiting.MAX_WAIT_HEADER] = f"{cap:g}"
        return response

    return wrapper  # type: ignore[return-value]


@blueprint.get("/jobs/<job_id>")
@_waits
def get_job(job_id: str) -> Any:
    """The job, tagged with its version; 304 by the version alone when it is unchanged."""
    if not is_public_id(job_id):
        raise _no_job(job_id)
    answers: AnswerCache = current_app.extensions["webhook_app.answers"]
    known = request.if_none_match
    with services().db.connection() as connection:
        # The version alone first when it may spare the rest: a tag to compare, or an answer
        # this process kept. A job read for the first time here is read whole at once.
        if known or job_id in answers:
            version = views.version_of(connection, job_id)
            if version is None:
                raise _no_job(job_id)
            if known.contains_weak(job_etag(version)):
                return _not_modified(job_etag(version))
            body = answers.get(job_id, version)
            if body is not None:
                return _tagged_body(body, job_etag(version))
        job = views.job_view(connection, job_id)
    if job is None:
        raise _no_job(job_id)
    response = _tagged(job_json(job), job_etag(job.version))
    answers.put(job_id, job.version, response.get_data())
    return response


@blueprint.get("/stats")
def stats() -> Any:
    """Jobs per status, with the same filters as the list."""
    created_after, prompt_contains = _created_after(), _text_filter()
    with services().db.read() as session:
        counts = jobs.count_by_status(
            session, created_after=created_after, prompt_contains=prompt_contains
        )
    # The counts are the whole answer: a tag of them spares an unchanged answer's body.
    tag = hashlib.blake2b(repr(sorted(counts.items())).encode(), digest_size=8).hexdigest()
    if request.if_none_match.contains_weak(tag):
        return _not_modified(tag)
    return _tagged(stats_json(counts), tag)


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
    if not is_public_id(job_id):
        raise _no_job(job_id)
    try:
        with svc.db.transaction() as session:
            job = action(session, job_id, now=utcnow(), **kwargs)
            session.flush()  # the version the commit will keep, for the answer and its ETag
            view = views.view_of(job)
            body = job_json(view)
    except LookupError:
        raise _no_job(job_id) from None
    return (
        jsonify(body),
        202,
        {"Location": body["links"]["self"], "ETag": f'"{job_etag(view.version)}"'},
    )


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
