"""The Flask app speaking the Depositphotos protocol on `/`, plus preview images."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, abort, jsonify, request

from .callbacks import CallbackDispatcher
from .control import control
from .knobs import SandboxKnobs, validate_knobs
from .png import gradient_png
from .protocol import EnvelopeFailure, failure_envelope, success_envelope, validation_error
from .runtime import EXTENSION_KEY, SandboxRuntime, current_runtime
from .state import SandboxState


@dataclass(frozen=True)
class ApiCall:
    runtime: SandboxRuntime
    params: dict[str, str]
    public_url: str

    def param(self, name: str) -> str:
        return self.params.get(name, "")

    def optional_param(self, name: str) -> str | None:
        return self.params.get(name, "").strip() or None

    def required_param(self, name: str) -> str:
        value = self.params.get(name, "").strip()
        if not value:
            raise validation_error(f"Parameter {name} is required")
        return value

    def require_session(self) -> None:
        self.runtime.state.require_session(self.param("dp_session_id"))


def _login(call: ApiCall) -> dict[str, Any]:
    return call.runtime.state.login(
        call.param("dp_login_user"), call.param("dp_login_password"), call.param("dp_apikey")
    )


def _logout(call: ApiCall) -> dict[str, Any]:
    call.runtime.state.logout(call.param("dp_session_id"))
    return {}


def _generate(call: ApiCall) -> dict[str, Any]:
    call.require_session()
    state = call.runtime.state
    generation = state.create_generation(
        prompt=call.param("dp_prompt"),
        aspect_ratio=call.optional_param("dp_aspect_ratio") or "1:1",
        medium=call.optional_param("dp_medium"),
        callback_url=call.optional_param("dp_callback_url"),
        public_url=call.public_url,
    )
    knobs = state.knobs_copy()
    call.runtime.callbacks.schedule(generation, reverse=knobs.reverse)
    data = generation.snapshot(generation.stage_at(state.clock()))
    if state.chance(knobs.hang_rate):
        # The work is done; only the answer is late, so the client cannot know the outcome.
        call.runtime.callbacks.stopping.wait(knobs.hang_seconds)
    return {"data": data}


def _get(call: ApiCall) -> dict[str, Any]:
    call.require_session()
    return {"data": call.runtime.state.current_snapshot(call.required_param("dp_uuid"))}


def _get_media_data(call: ApiCall) -> dict[str, Any]:
    call.require_session()
    return {"data": call.runtime.state.media_data(call.required_param("dp_uuid"))}


COMMANDS: dict[str, Callable[[ApiCall], dict[str, Any]]] = {
    "login": _login,
    "logout": _logout,
    "imageGenerator.generate": _generate,
    "imageGenerator.get": _get,
    "imageGenerator.getMediaData": _get_media_data,
}


def _json_param(name: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str | int | float):
        return str(value)
    raise validation_error(f"Parameter {name} must be a scalar")


def request_params() -> dict[str, str]:
    """Query string merged with the form or JSON body; the body wins on a clash."""
    params = dict(request.args.items())
    if not request.is_json:
        params.update(request.form.items())
        return params
    body = request.get_json(silent=True)
    if body is None:
        if request.get_data():
            raise validation_error("Request body is not valid JSON")
        return params
    if not isinstance(body, dict):
        raise validation_error("Request body must be a JSON object")
    for name, value in body.items():
        text = _json_param(name, value)
        if text is not None:
            params[name] = text
    return params


def run_command(runtime: SandboxRuntime, params: dict[str, str], public_url: str) -> dict[str, Any]:
    """Answer one API call with the success fields, or raise EnvelopeFailure."""
    refused = runtime.state.over_rate() or runtime.state.transient_failure()
    if refused is not None:
        raise refused
    runtime.state.check_api_key(params.get("dp_apikey", ""))
    command = params.get("dp_command", "")
    handler = COMMANDS.get(command)
    if handler is None:
        raise EnvelopeFailure(
            "undefined_command", f"Unknown command {command[:50]!r}" if command else None
        )
    return handler(ApiCall(runtime, params, public_url))


def api() -> Response:
    runtime = current_runtime()
    try:
        params = request_params()
    except EnvelopeFailure as error:
        runtime.state.record_call(request.args.get("dp_command", ""))
        return jsonify(failure_envelope(error, runtime.state.knobs_copy().error_names))
    runtime.state.record_call(params.get("dp_command", ""))
    public_url = runtime.public_url or request.host_url.rstrip("/")
    try:
        fields = run_command(runtime, params, public_url)
    except EnvelopeFailure as error:
        return jsonify(failure_envelope(error, runtime.state.knobs_copy().error_names))
    return jsonify(success_envelope(fields))


def preview(item_uuid: str) -> Response:
    state = current_runtime().state.preview_state(item_uuid)
    if state != "available":
        abort(410 if state == "expired" else 404)
    return Response(gradient_png(item_uuid), mimetype="image/png")


def create_sandbox_app(knobs: SandboxKnobs | None = None, public_url: str | None = None) -> Flask:
    """A Depositphotos-compatible fake upstream; `knobs` stays shared and may be changed live."""
    knobs = knobs if knobs is not None else SandboxKnobs()
    validate_knobs(knobs)
    state = SandboxState(knobs)
    runtime = SandboxRuntime(
        state=state,
        callbacks=CallbackDispatcher(state),
        public_url=public_url.rstrip("/") if public_url else None,
    )
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION_KEY] = runtime
    app.add_url_rule("/", "api", api, methods=["GET", "POST"])
    app.add_url_rule("/previews/<item_uuid>.png", "preview", preview)
    app.register_blueprint(control)
    return app
