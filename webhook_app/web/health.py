"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from sqlalchemy import text

from webhook_app.app import services
from webhook_app.services.upstream_state import current_pause

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz() -> Any:
    """Ready when the database answers and the broker accepts a connection; whether the
    upstream accepts our credentials is reported too (`degraded`), without failing."""
    svc = services()
    checks: dict[str, str] = {}
    try:
        with svc.db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready; the reason is the answer
        checks["database"] = f"unreachable: {type(exc).__name__}"
    checks["broker"] = svc.enqueuer.check()
    ready = all(value == "ok" for value in checks.values())
    if checks["database"] == "ok":
        # Reported, never a reason to take the web process out of rotation: the API still
        # answers, and submissions resume by themselves.
        checks["upstream"] = _upstream(svc)
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    return jsonify(body), (200 if ready else 503)


def _upstream(svc: Any) -> str:
    try:
        with svc.db.read() as session:
            pause = current_pause(session)
    except Exception as exc:  # a missing table or a dropped connection must not fail readiness
        return f"unknown: {type(exc).__name__}"
    if pause is None:
        return "ok"
    return f"degraded: credentials refused since {pause.since.strftime('%Y-%m-%dT%H:%M:%SZ')}"
