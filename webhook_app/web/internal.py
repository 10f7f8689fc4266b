"""Calling this app's own API in-process, as a client with a bearer token would.

The dashboard reads and acts only through the API, so the API's checks (tokens, scopes,
validation, states) are the only ones and the dashboard cannot drift from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app, request
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Response


@dataclass(frozen=True)
class ApiAnswer:
    status: int
    body: Any
    etag: str | None = None  # unquoted

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        """The error's message, for showing to a person."""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        return f"the service answered HTTP {self.status}"


def call_api(
    method: str,
    path: str,
    *,
    token: str,
    query: dict[str, Any] | None = None,
    body: Any = None,
    if_none_match: str | None = None,
) -> ApiAnswer:
    """Dispatch one request through the app's WSGI stack and return its JSON answer (None for
    a 304, when `if_none_match` is still the answer's tag)."""
    headers = [("Authorization", f"Bearer {token}")]
    if if_none_match:
        headers.append(("If-None-Match", f'"{if_none_match}"'))
    builder = EnvironBuilder(
        path=path,
        method=method,
        query_string={k: v for k, v in (query or {}).items() if v not in (None, "")},
        json=body,
        headers=headers,
        environ_base={"REMOTE_ADDR": request.remote_addr or "127.0.0.1"},
    )
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    response = Response.from_app(current_app.wsgi_app, environ, buffered=True)
    tag, _ = response.get_etag()
    return ApiAnswer(response.status_code, response.get_json(silent=True), tag)
