"""Bearer-token authentication for the query API, and per-route scope declarations.

`authenticate` runs before every request of a blueprint: 401 unless the token is one of
API_TOKENS (read-write) or an unrevoked token made with `webhook-app tokens create`. A route
that changes something declares `@requires_scope(WRITE)`: 403 for a read-only token.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import g, request

from webhook_app.extensions import services
from webhook_app.infra.callback_tokens import matches_any
from webhook_app.infra.refusals import API_SCOPE, API_UNAUTHENTICATED, refuse
from webhook_app.services import api_tokens
from webhook_app.services.api_tokens import READ, WRITE
from webhook_app.web.errors import ErrorAnswer

__all__ = ["READ", "WRITE", "authenticate", "requires_scope"]

F = TypeVar("F", bound=Callable[..., Any])
CHALLENGE = 'Bearer realm="webhook_app"'


def _identify(token: str) -> api_tokens.Holder | None:
    svc = services()
    if matches_any(svc.settings.api_tokens, token):
        return api_tokens.Holder(WRITE)
    if not token.startswith(api_tokens.PREFIX):
        return None
    with svc.db.read() as session:
        found = api_tokens.find_active(session, token)
        return api_tokens.Holder.of(found) if found else None


def authenticate() -> None:
    """A before_request hook: passes when the bearer token is known, else answers 401."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    holder = _identify(token) if scheme.lower() == "bearer" and token else None
    if holder is None:
        refuse(API_UNAUTHENTICATED, request.remote_addr)
        raise ErrorAnswer(
            401,
            "unauthorized",
            "a valid bearer token is required",
            headers={"WWW-Authenticate": CHALLENGE},
        )
    g.token_scope = holder.scope
    g.token = holder


def requires_scope(needed: str) -> Callable[[F], F]:
    """Declare the scope a view needs; a token without it gets 403 before the view runs."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not api_tokens.grants(g.get("token_scope"), needed):
                refuse(API_SCOPE, request.remote_addr)
                message = f"this token does not have the {needed} scope"
                challenge = f'{CHALLENGE}, error="insufficient_scope", scope="{needed}"'
                raise ErrorAnswer(
                    403, "insufficient_scope", message, headers={"WWW-Authenticate": challenge}
                )
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
