"""`/_sandbox/*`: plain-JSON routes for tests and operators to inspect and steer the sandbox."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from .runtime import current_runtime

control = Blueprint("sandbox_control", __name__, url_prefix="/_sandbox")


def _error(message: str) -> tuple[Response, int]:
    return jsonify({"error": message}), 400


@control.get("/stats")
def stats() -> Response:
    return jsonify(current_runtime().state.stats())


@control.get("/generations")
def generations() -> Response:
    return jsonify(current_runtime().state.list_generations())


@control.get("/knobs")
def get_knobs() -> Response:
    return jsonify(current_runtime().state.knobs_copy().as_dict())


@control.post("/knobs")
def update_knobs() -> Response | tuple[Response, int]:
    changes = request.get_json(silent=True)
    if not isinstance(changes, dict):
        return _error("expected a JSON object of knob names to values")
    try:
        return jsonify(current_runtime().state.update_knobs(changes))
    except ValueError as error:
        return _error(str(error))


@control.post("/reset")
def reset() -> Response:
    runtime = current_runtime()
    runtime.callbacks.clear()
    runtime.state.reset()
    return jsonify({"reset": True})


@control.post("/expire-sessions")
def expire_sessions() -> Response:
    current_runtime().state.expire_sessions()
    return jsonify({"expired": True})
