"""What the commands share: the settings, and the way to a running service and its answers."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from webhook_app.settings import DEV_DEFAULTS, Settings, SettingsError, read_setting


class ConfigurationError(click.ClickException):
    """A variable is missing or malformed: one line naming it, and a usage error's status."""

    exit_code = 2

    def __init__(self, error: SettingsError) -> None:
        super().__init__(f"configuration: {error}")


def load_settings() -> Settings:
    """Every setting; a bad one ends the command with a message naming it."""
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise ConfigurationError(exc) from None


def setting(name: str) -> Any:
    """One variable, for commands that need none of the others."""
    try:
        return read_setting(name)
    except SettingsError as exc:
        raise ConfigurationError(exc) from None


def connect(url: str | None, token: str | None) -> Any:
    """A client for the service at `url` (else $WEBHOOK_APP_URL, else this machine's $PORT)."""
    from webhook_app.tools.client import Client

    url = url or os.environ.get("WEBHOOK_APP_URL") or f"http://127.0.0.1:{setting('PORT')}"
    token = token or os.environ.get("WEBHOOK_APP_TOKEN") or _first_api_token()
    return Client(url, token)


def _first_api_token() -> str:
    tokens: tuple[str, ...] = setting("API_TOKENS")
    return tokens[0] if tokens else DEV_DEFAULTS["API_TOKENS"]


connection = [
    click.option(
        "--url", envvar="WEBHOOK_APP_URL", help="Service URL (default http://127.0.0.1:8000)."
    ),
    click.option(
        "--token", envvar="WEBHOOK_APP_TOKEN", help="API token (default: first of API_TOKENS)."
    ),
]


def with_connection(f: Any) -> Any:
    for option in reversed(connection):
        f = option(f)
    return f


def json_option(name: str, raw: str | None) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise click.BadParameter("must be JSON", param_hint=name) from None


def api_call(call: Any) -> Any:
    from requests import RequestException

    from webhook_app.tools.client import ApiError

    try:
        return call()
    except ApiError as exc:
        raise click.ClickException(str(exc)) from None
    except RequestException as exc:
        raise click.ClickException(f"cannot reach the service: {type(exc).__name__}") from None


def summary(job: dict[str, Any]) -> str:
    items = job.get("items") or []
    ids = sum(1 for item in items if item.get("dp_item_id"))
    line = (
        f"{job['id']}  {job['status']:<10}  {len(items)} items ({ids} with dpItemId)  "
        f"{job['prompt'][:50]}"
    )
    if job.get("last_error"):
        line += (
            f"\n  last error: {job['last_error'].get('kind')}: {job['last_error'].get('message')}"
        )
    return line
