"""What the deployment's shared parts say: usage today against the daily budgets, whether
submissions to the upstream are paused, and which workers run."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify

from webhook_app.extensions import services
from webhook_app.models import utcnow
from webhook_app.services import budgets, heartbeats
from webhook_app.services.upstream_state import current_pause
from webhook_app.web.auth import authenticate

blueprint = Blueprint("usage", __name__, url_prefix="/api/v1")
blueprint.before_request(authenticate)


def request_budgets() -> list[budgets.Budget]:
    """The budgets a job created by this request counts against."""
    holder = g.token
    return budgets.budgets_for(
        services().settings.daily_generation_budget,
        token_id=holder.token_id,
        token_name=holder.name,
        token_limit=holder.daily_limit,
    )


@blueprint.get("/usage")
def usage() -> Any:
    """Generations counted today, the daily limits, and when they reset."""
    now = utcnow()
    found = request_budgets()
    with services().db.read() as session:
        counted = budgets.usage(session, found, now=now)
    holder = g.token
    token = None
    if holder.token_id is not None:
        token = {
            "id": holder.token_id,
            "name": holder.name,
            **counted[budgets.token_budget_name(holder.token_id)],
        }
    return jsonify(
        {
            "day": budgets.day_of(now),
            "resets_at": budgets.resets_at(now).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "deployment": counted[budgets.DEPLOYMENT],
            "token": token,
        }
    )


@blueprint.get("/upstream")
def upstream() -> Any:
    """Whether submissions are paused because the upstream refuses the credentials."""
    with services().db.read() as session:
        pause = current_pause(session)
    if pause is None:
        return jsonify({"paused": False, "since": None, "reason": None, "next_probe_at": None})
    return jsonify(pause.as_json())


@blueprint.get("/workers")
def workers() -> Any:
    """The workers heard from lately, and whether each reaches its broker."""
    with services().db.read() as session:
        found = heartbeats.recent(session, now=utcnow())
    return jsonify(
        {
            "summary": heartbeats.summary(found),
            "workers": [
                {
                    "name": worker.name,
                    "state": worker.state,
                    "detail": worker.detail,
                    "broker": worker.broker,
                    "seen_at": worker.seen_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
                for worker in found
            ],
        }
    )
