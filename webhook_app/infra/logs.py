"""Logging: one JSON object per line in production, plain text in development.

Every line carries what the current request or task is about (request id, job id, task),
bound with `bind()` and kept in a context variable, plus the fields a call passes in
`extra=` (command, duration_ms, outcome, ...).
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from webhook_app.settings import Settings

_context: ContextVar[dict[str, Any] | None] = ContextVar("webhook_app_log_context", default=None)

# Attributes every LogRecord has; anything else on a record is an event field.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def bind(**fields: Any) -> None:
    """Add fields to every later line of this request or task."""
    _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}})


def clear() -> None:
    _context.set({})


def current_request_id() -> str | None:
    value = (_context.get() or {}).get("request_id")
    return str(value) if value else None


def new_request_id() -> str:
    return uuid.uuid4().hex


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record (fields passed with `extra=` win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def event_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **event_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = event_fields(record)
        if not fields:
            return line
        first, newline, rest = line.partition("\n")
        pairs = " ".join(f"{key}={value}" for key, value in fields.items())
        return f"{first} [{pairs}]{newline}{rest}"


def log_filters() -> list[logging.Filter]:
    """Every filter a record passes before it is written: the one place to add another."""
    return [ContextFilter()]


def configure_logging(settings: Settings) -> None:
    """Send every logger's records to stderr in the configured format; safe to call again."""
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name("webhook_app")
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    for log_filter in log_filters():
        handler.addFilter(log_filter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "webhook_app"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # Our own line per task (with duration and outcome) replaces Celery's "succeeded in".
    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)
