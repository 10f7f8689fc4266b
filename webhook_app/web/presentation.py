"""Small formatting helpers for the dashboard's templates."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl


def ago(timestamp: str | None, now: datetime | None = None) -> str:
    """`2026-01-01T12:00:00Z` as "3 min ago"."""
    if not timestamp:
        return ""
    then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def pretty_body(delivery: dict[str, Any]) -> str:
    """A delivery's body for reading: JSON indented, a form one field a line, else as is."""
    body = str(delivery.get("body", ""))
    if delivery.get("body_encoding") != "utf-8":
        return body
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        pass
    if "form-urlencoded" in (delivery.get("content_type") or ""):
        return "\n".join(f"{k} = {v}" for k, v in parse_qsl(body, keep_blank_values=True))
    return body


def size(item: dict[str, Any]) -> str:
    """`1024x768 image/jpeg`, or what is known so far."""
    parts = []
    if item.get("width") and item.get("height"):
        parts.append(f"{item['width']}x{item['height']}")
    if item.get("type"):
        parts.append(str(item["type"]))
    return " ".join(parts) or "size pending"
