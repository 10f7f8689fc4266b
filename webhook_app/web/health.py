"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from sqlalchemy import text

from webhook_app.extensions import services
from webhook_app.infra.queue import describe_broker
from webhook_app.models import utcnow
from webhook_app.services import heartbeats
from webhook_app.services.upstream_state import current_pause

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz() -> Any:
    """Ready when the database answers and the broker accepts a connection.

    What the workers and the upstream report is told too (`degraded`), but never takes this
    process out of rotation: the web side can still take callbacks and answer queries while no
    worker runs or submissions are paused, and they resume by themselves.
    """
    svc = services()
    checks: dict[str, str] = {}
    workers = "unknown: the database is unreachable"
    try:
        with svc.db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
        with svc.db.read() as session:
            workers = heartbeats.summary(heartbeats.recent(session, now=utcnow()))
    except Exception as exc:  # any failure means not ready; the reason is the answer
        checks["database"] = f"unreachable: {type(exc).__name__}"
    checks["broker"] = svc.enqueuer.check()
    ready = all(value == "ok" for value in checks.values())
    if checks["database"] == "ok":
        checks["upstream"] = _upstream(svc)
    degraded = workers != "ok" or checks.get("upstream", "ok") != "ok"
    status = "unavailable" if not ready else "degraded" if degraded else "ready"
    body = {
        "status": status,
        "checks": checks,
        "workers": workers,
        "broker": describe_broker(svc.settings),
    }
    return jsonify(body), 200 if ready else 503


def _upstream(svc: Any) -> str:
    try:
        with svc.db.read() as session:
            pause = current_pause(session)
    except Exception as exc:  # a missing table or a dropped connection must not fail readiness
        return f"unknown: {type(exc).__name__}"
    if pause is None:
        return "ok"
    return f"degraded: credentials refused since {pause.since.strftime('%Y-%m-%dT%H:%M:%SZ')}"
