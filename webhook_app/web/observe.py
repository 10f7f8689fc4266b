"""Request ids, one log line per request, and /metrics."""

from __future__ import annotations

import logging
import re
import time

from flask import Blueprint, Flask, Response, g, request

from webhook_app.extensions import services
from webhook_app.infra import logs, metrics

log = logging.getLogger("webhook_app.http")
blueprint = Blueprint("observe", __name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Probes and scrapes come every few seconds; their lines are debug only.
_QUIET = frozenset({"/healthz", "/readyz", "/metrics"})


@blueprint.get("/metrics")
def scrape() -> Response:
    body, content_type = metrics.render(services().db)
    return Response(body, content_type=content_type)


def start_request(given: str) -> str:
    """Begin a request's log context: its request id, the X-Request-ID it was given if well
    formed, else a new one."""
    logs.clear()
    request_id = given if _REQUEST_ID.match(given) else logs.new_request_id()
    logs.bind(request_id=request_id)
    return request_id


def log_request(
    method: str, route: str, status: int, elapsed: float, *, quiet: bool = False
) -> None:
    """The request's one line. The route, not the path: callback paths carry their token."""
    log.log(
        logging.DEBUG if quiet else logging.INFO,
        "request",
        extra={
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round(elapsed * 1000),
        },
    )


def _start() -> None:
    start_request(request.headers.get("X-Request-ID", ""))
    g.started = time.perf_counter()


def _finish(response: Response) -> Response:
    response.headers["X-Request-ID"] = logs.current_request_id() or ""
    log_request(
        request.method,
        request.url_rule.rule if request.url_rule else "unmatched",
        response.status_code,
        time.perf_counter() - g.get("started", time.perf_counter()),
        quiet=request.path in _QUIET,
    )
    return response


def _forget(_: BaseException | None) -> None:
    logs.clear()


def init_app(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)
    app.teardown_request(_forget)
    app.register_blueprint(blueprint)
