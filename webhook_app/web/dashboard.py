"""The dashboard at /: jobs with their images, one page per job, and the operator actions.

Server-rendered; a little JavaScript refreshes the page's live region while jobs run. The API
token a person signs in with is kept in the session cookie (signed, HttpOnly, SameSite=Lax,
Secure outside development), and every read and action goes through the API with it.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    abort,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from webhook_app.extensions import services
from webhook_app.settings import Settings
from webhook_app.states import TERMINAL, JobStatus
from webhook_app.web import presentation
from webhook_app.web.internal import ApiAnswer, call_api

blueprint = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/dashboard/static",
)
F = TypeVar("F", bound=Callable[..., Any])
PAGE_SIZE = 20
RUNNING = frozenset(s.value for s in JobStatus if s not in TERMINAL)
# Operator actions: API route suffix -> (label, statuses in which the button is offered).
# The API has the last word on whether an action applies (409 otherwise).
ACTIONS: dict[str, tuple[str, frozenset[str]]] = {
    "refresh": ("Refresh now", frozenset(s.value for s in JobStatus) - {"queued", "completed"}),
    "retry": ("Retry", frozenset({"failed", "timed_out"})),
    "cancel": ("Cancel", frozenset({"queued", "submitting"})),
}


class DashboardSessions(SecureCookieSessionInterface):
    """The signed session cookie, opened for the dashboard's pages only: the API and the
    receiver never read it, so they spare building its serializer on every request."""

    def open_session(self, app: Flask, incoming: Request) -> SecureCookieSession | None:
        if incoming.path.startswith(("/api/", "/callbacks/")):
            return None  # Flask's null session: nothing is saved
        return super().open_session(app, incoming)


def init_app(app: Flask, settings: Settings) -> None:
    app.secret_key = settings.secret_key
    app.session_interface = DashboardSessions()
    app.config.update(
        SESSION_COOKIE_NAME="webhook_app_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=not settings.is_development,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
    )
    app.jinja_env.filters.update(
        ago=presentation.ago, pretty_body=presentation.pretty_body, size=presentation.size
    )
    app.register_blueprint(blueprint)


def _token() -> str:
    return str(session.get("token", ""))


def _csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return str(session["csrf"])


def _check_csrf() -> None:
    sent = request.form.get("csrf", "")
    if not sent or not hmac.compare_digest(sent.encode(), _csrf_token().encode()):
        abort(400, "the form expired; reload the page and try again")


@blueprint.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"csrf_token": _csrf_token, "signed_in": bool(session.get("token"))}


def signed_in(view: F) -> F:
    """Send people without a session to the login form, and back here afterwards."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not _token():
            return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _api(method: str, path: str, **kwargs: Any) -> ApiAnswer:
    answer = call_api(method, path, token=_token(), **kwargs)
    if answer.status == 401:  # the token was revoked since sign-in
        session.clear()
        flash("Your token is no longer accepted; sign in again.", "error")
        abort(redirect(url_for("dashboard.login")))
    return answer


def _safe_next(target: str | None) -> str:
    """Only a path on this site, never another host."""
    parts = urlsplit(target or "")
    # Browsers read "/\\host" as "//host": another site.
    if not target or parts.scheme or parts.netloc or not target.startswith("/") or "\\" in target:
        return url_for("dashboard.jobs")
    return target


@blueprint.after_request
def _headers(response: Any) -> Any:
    if request.endpoint == "dashboard.static":
        return response
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("Content-Security-Policy", _content_security_policy())
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def _content_security_policy() -> str:
    """Nothing inline, nothing from elsewhere, but the upstream's images."""
    images = ["'self'", "https:"]
    upstream = urlsplit(services().settings.dp_api_url)
    if upstream.scheme == "http":  # the sandbox, on this machine
        images.append(f"http://{upstream.netloc}")
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        f"img-src {' '.join(images)}; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    )


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        _check_csrf()
        token = request.form.get("token", "").strip()
        answer = call_api("GET", "/api/v1/stats", token=token) if token else None
        if answer is not None and answer.ok:
            target = _safe_next(request.form.get("next"))
            session.clear()  # a fresh session (and CSRF token) for the new identity
            session.permanent = True
            session["token"] = token
            return redirect(target)
        error = "That token is not accepted." if token else "Enter an API token."
    elif _token():
        return redirect(url_for("dashboard.jobs"))
    status = 401 if error else 200
    return render_template("dashboard/login.html", error=error, next=request.args.get("next")), (
        status
    )


@blueprint.post("/logout")
def logout() -> Any:
    _check_csrf()
    session.clear()
    flash("Signed out.", "info")
    return redirect(url_for("dashboard.login"))


@blueprint.get("/")
@signed_in
def jobs() -> Any:
    filters = {
        "status": request.args.get("status") or None,
        "q": (request.args.get("q") or "").strip() or None,
    }
    cursor = request.args.get("cursor") or None
    list_query = {**filters, "cursor": cursor, "limit": PAGE_SIZE}
    partial = bool(request.args.get("partial"))
    known = _known_parts() if partial else (None, None)
    page = _api("GET", "/api/v1/jobs", query=list_query, if_none_match=known[0])
    stats = _api("GET", "/api/v1/stats", query={"q": filters["q"]}, if_none_match=known[1])
    if page.status == stats.status == 304:
        # Neither the list nor its counts changed: the refresh costs two version checks.
        return Response(status=304, headers=_partial_headers(page.etag, stats.etag))
    if page.status == 304:
        page = _api("GET", "/api/v1/jobs", query=list_query)
    if stats.status == 304:
        stats = _api("GET", "/api/v1/stats", query={"q": filters["q"]})
    if not page.ok:
        flash(page.message, "error")
    listed = page.body["jobs"] if page.ok else []
    context = {
        "jobs": listed,
        "filters": filters,
        "cursor": cursor,
        "next_cursor": page.body.get("next_cursor") if page.ok else None,
        "counts": stats.body["jobs"] if stats.ok else {},
        "total": stats.body["total"] if stats.ok else 0,
        "statuses": [s.value for s in JobStatus],
        "running": any(job["status"] in RUNNING for job in listed),
        # The first page also looks for new jobs now and then; later pages only while running.
        "idle_refresh": cursor is None,
    }
    if partial:
        # The list alone, refreshed every few seconds: the banners stay as the page drew them.
        html = render_template("dashboard/_jobs.html", **context)
        return Response(html, headers=_partial_headers(page.etag, stats.etag))
    return render_template("dashboard/jobs.html", **context, **_deployment_state())


def _known_parts() -> tuple[str | None, str | None]:
    """The list's and the counts' tags inside the refreshed list's tag the browser sent."""
    for tag in request.if_none_match.as_set(include_weak=True):
        list_tag, _, stats_tag = tag.removeprefix("list:").partition("+")
        if tag.startswith("list:") and list_tag and stats_tag:
            return list_tag, stats_tag
    return None, None


def _partial_headers(list_tag: str | None, stats_tag: str | None) -> dict[str, str]:
    if not (list_tag and stats_tag):
        return {}
    # Kept by the browser, and asked again with If-None-Match at each refresh.
    return {"ETag": f'"list:{list_tag}+{stats_tag}"', "Cache-Control": "private, no-cache"}


def _deployment_state() -> dict[str, Any]:
    """What the page says above the list: usage, a paused upstream, workers not working."""
    usage = _api("GET", "/api/v1/usage")
    upstream = _api("GET", "/api/v1/upstream")
    workers = _api("GET", "/api/v1/workers")
    return {
        "usage": usage.body if usage.ok else None,
        "upstream": upstream.body if upstream.ok else None,
        "workers": workers.body["summary"] if workers.ok else None,
    }


@blueprint.post("/jobs")
@signed_in
def create_job() -> Any:
    _check_csrf()
    body = {
        name: value
        for name in ("prompt", "aspect_ratio", "medium")
        if (value := request.form.get(name, "").strip())
    }
    answer = _api("POST", "/api/v1/jobs", body=body)
    if answer.ok:
        flash(f"Job {answer.body['id']} queued.", "info")
    else:
        flash(f"Not created: {answer.message}", "error")
    return redirect(url_for("dashboard.jobs"))


@blueprint.get("/jobs/<job_id>")
@signed_in
def job(job_id: str) -> Any:
    base = f"/api/v1/jobs/{job_id}"
    found = _api("GET", base)
    if found.status == 404:
        return render_template("dashboard/missing.html", job_id=job_id), 404
    if not found.ok:
        flash(found.message, "error")
        return redirect(url_for("dashboard.jobs"))
    events = _api("GET", f"{base}/events")
    deliveries = _api("GET", f"{base}/deliveries")
    context = {
        "job": found.body,
        "events": events.body["events"] if events.ok else [],
        "deliveries": deliveries.body["deliveries"] if deliveries.ok else [],
        "actions": _actions_for(found.body["status"]),
        # Sizes arrive shortly after completion: keep refreshing until they are there.
        "running": found.body["status"] in RUNNING
        or (
            found.body["status"] == "completed"
            and any(not item["width"] for item in found.body["items"])
        ),
    }
    template = "dashboard/_job.html" if request.args.get("partial") else "dashboard/job.html"
    return render_template(template, **context)


def _actions_for(status: str) -> list[tuple[str, str]]:
    return [(name, label) for name, (label, statuses) in ACTIONS.items() if status in statuses]


@blueprint.post("/jobs/<job_id>/<action>")
@signed_in
def act(job_id: str, action: str) -> Any:
    _check_csrf()
    if action not in ACTIONS:
        abort(404)
    label = ACTIONS[action][0]
    answer = _api("POST", f"/api/v1/jobs/{job_id}/{action}")
    if answer.ok and action == "retry" and isinstance(answer.body, dict):
        flash("Retried as this new job.", "info")
        return redirect(url_for("dashboard.job", job_id=answer.body["id"]))
    if answer.ok:
        flash(f"{label}: done.", "info")
    elif answer.status == 404:
        flash("No such job.", "error")
    elif answer.status == 403:
        flash(f"{label}: your token may not do this.", "error")
    else:
        flash(f"{label}: {answer.message}", "error")
    return redirect(url_for("dashboard.job", job_id=job_id))
