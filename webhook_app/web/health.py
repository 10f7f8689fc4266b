"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from sqlalchemy import text

from webhook_app.app import services
from webhook_app.models import utcnow
from webhook_app.queue import describe_broker
from webhook_app.services import heartbeats

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz() -> Any:
    """Ready when the database answers and the broker accepts a connection.

    What the workers report is told too, but never takes this process out of rotation: the
    web side can still take callbacks and answer queries while no worker runs.
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
    status = "unavailable" if not ready else "ready" if workers == "ok" else "degraded"
    body = {
        "status": status,
        "checks": checks,
        "workers": workers,
        "broker": describe_broker(svc.settings),
    }
    return jsonify(body), 200 if ready else 503
