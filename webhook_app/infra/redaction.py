"""Keeping secrets out of what the system writes: log lines, stored bodies, messages.

A Redactor replaces known secret values (and their URL-encoded forms) with a marker, and masks
the token of every callback URL (`/callbacks/<job id>/<token>`), since each token is a secret
of its own derived from the callback secret.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, urlsplit

if TYPE_CHECKING:
    from webhook_app.settings import Settings

REDACTED = "[redacted]"
# Shorter values are not worth hiding and would mangle ordinary words.
MIN_SECRET_LENGTH = 6
# Secrets learned at run time (upstream session ids) that logs keep hiding.
MAX_REMEMBERED = 16

# The separator may be plain, percent-encoded (a form body) or JSON-escaped.
_SEP = r"(?:/|%2F|\\/)"
_CALLBACK_PATH = re.compile(
    rf"(callbacks{_SEP}[^\s/\\%?#&\"'<>]{{1,200}}{_SEP})[A-Za-z0-9_-]+", re.IGNORECASE
)
_CALLBACK_PATH_BYTES = re.compile(_CALLBACK_PATH.pattern.encode(), re.IGNORECASE)


def mask_callback_paths(text: str) -> str:
    """Replace the token of every callback URL in `text`."""
    return _CALLBACK_PATH.sub(rf"\g<1>{REDACTED}", text)


class Redactor:
    """Replaces a set of secret values, and every callback token, in text and bytes."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._lock = threading.Lock()
        self._fixed = self._variants(secrets)
        self._remembered: list[str] = []
        self._all = self._fixed

    @staticmethod
    def _variants(secrets: Iterable[str | None]) -> tuple[str, ...]:
        values = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}
        values |= {quote(s, safe="") for s in values} | {quote_plus(s) for s in values}
        # Longest first, so a secret that contains another is replaced whole.
        return tuple(sorted(values, key=len, reverse=True))

    def remember(self, secret: str | None) -> None:
        """Also hide a secret learned while running, such as a login session id."""
        if not secret or len(secret) < MIN_SECRET_LENGTH or secret in self._all:
            return
        with self._lock:
            self._remembered = [*self._remembered, secret][-MAX_REMEMBERED:]
            self._all = tuple(
                sorted({*self._fixed, *self._variants(self._remembered)}, key=len, reverse=True)
            )

    def __call__(self, text: str) -> str:
        for secret in self._all:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return mask_callback_paths(text)

    def redact_bytes(self, data: bytes) -> bytes:
        marker = REDACTED.encode()
        for secret in self._all:
            encoded = secret.encode()
            if encoded in data:
                data = data.replace(encoded, marker)
        # A case-blind pattern is tried at every offset; most bodies name no callback, and a
        # substring search over the lowered bytes says so five times faster. Both are ASCII.
        if b"callbacks" not in data.lower():
            return data
        return _CALLBACK_PATH_BYTES.sub(rb"\g<1>" + marker, data)


def settings_secrets(settings: Settings) -> list[str | None]:
    """Every secret the configuration holds."""
    values: list[str | None] = [*settings.callback_secrets, *settings.api_tokens]
    if not settings.uses_sandbox:
        # The sandbox's placeholders ("sandbox") are no secrets.
        values += [settings.dp_api_key, settings.dp_login_user, settings.dp_login_password]
    for url in (settings.database_url, settings.broker_url):
        with contextlib.suppress(ValueError):
            values.append(urlsplit(url).password)
    return values


class RedactingFilter(logging.Filter):
    """Renders a record's message (and traceback) with every installed secret replaced."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact = _active
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: let the handler report it as usual
            return True
        record.msg, record.args = redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_active = Redactor()
_filter = RedactingFilter()
_factory_lock = threading.Lock()
_factory_installed = False


def install_redaction(settings: Settings | None = None) -> Redactor:
    """Redact the settings' secrets and every callback token from this process's log records.

    A filter on the root logger would not see records that child loggers hand straight to
    its handlers, nor records of loggers that do not propagate (gunicorn's access log), so
    the filter runs in the log record factory: every record is redacted as it is made.
    """
    global _active, _factory_installed
    _active = Redactor(settings_secrets(settings) if settings else ())
    with _factory_lock:
        if not _factory_installed:
            previous = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                _filter.filter(record)
                return record

            logging.setLogRecordFactory(factory)
            _factory_installed = True
    return _active


def remember_secret(secret: str | None) -> None:
    """Hide a secret learned at run time from this process's logs from now on."""
    _active.remember(secret)
