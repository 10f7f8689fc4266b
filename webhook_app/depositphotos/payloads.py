"""Turn a callback body into the mapping the upstream meant, whatever its encoding.

The upstream documents neither the content type nor the shape of its callbacks, so both
JSON and form bodies are read, and the success envelope is unwrapped when present.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

MAX_DEPTH = 8
MAX_KEYS = 2000
# Longer numbers mean nothing here (item ids are 64-bit) and cost time to convert.
MAX_NUMBER_CHARS = 32


class PayloadError(ValueError):
    """The body cannot be understood; the message says why."""


class ReportedFailure(PayloadError):
    """The body is a failure envelope: the upstream reports an error, not a result."""

    def __init__(self, error: Mapping[str, Any]) -> None:
        message = str(error.get("errormsg", ""))[:200]
        # Kept as the delivery's detail: no control characters (PostgreSQL refuses NUL).
        printable = "".join(c if c.isprintable() else "\ufffd" for c in message)
        super().__init__(f"failure envelope: {printable}")
        self.error = error


def decode_body(body: bytes, content_type: str | None) -> Mapping[str, Any]:
    """Parse a JSON or form-encoded body into a mapping."""
    if not body.strip():
        raise PayloadError("empty body")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("body is not valid UTF-8") from None
    media_type = (content_type or "").split(";")[0].strip().lower()
    looks_json = text.lstrip().startswith(("{", "["))
    if media_type.endswith("json") or (looks_json and "form" not in media_type):
        return _decode_json(text)
    if media_type in ("", "application/x-www-form-urlencoded", "text/plain"):
        return _decode_form(text)
    raise PayloadError(f"unsupported content type {media_type!r}")


def unwrap_envelope(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return the result inside a success envelope, or the payload itself when it is bare."""
    kind = payload.get("type")
    if kind == "failure":
        error = payload.get("error")
        raise ReportedFailure(error if isinstance(error, Mapping) else {})
    data = payload.get("data")
    if kind == "success" or "uuid" not in payload:
        if isinstance(data, Mapping):
            return data
        if "uuid" not in payload:
            raise PayloadError("envelope has no data object")
    # Bare, or a success envelope with its fields at the top level (as login answers).
    return payload


def parse_json(body: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Strict JSON: UTF-8, no NaN or Infinity, numbers of bounded length, bounded nesting."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("body is not valid UTF-8") from None
    try:
        value = json.loads(
            body, parse_int=_integer, parse_float=_real, parse_constant=_not_a_number
        )
    except PayloadError:
        raise
    except RecursionError:
        raise PayloadError(f"nesting deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise PayloadError(f"malformed JSON: {str(exc)[:120]}") from None
    # No value lies deeper than there are brackets, so a body with few (a callback's) needs
    # no walk through everything it holds.
    if body.count("{") + body.count("[") > max_depth:
        _check_depth(value, 0, max_depth)
    return value


def _integer(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise PayloadError(f"a number is longer than {MAX_NUMBER_CHARS} characters")
    return int(text)


def _real(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise PayloadError(f"a number is longer than {MAX_NUMBER_CHARS} characters")
    value = float(text)
    if not math.isfinite(value):
        raise PayloadError(f"{text} is too large for a number")
    return value


def _not_a_number(text: str) -> Any:
    raise PayloadError(f"{text} is not a JSON number")


def _decode_json(text: str) -> Mapping[str, Any]:
    value = parse_json(text)
    if not isinstance(value, dict):
        raise PayloadError("JSON body is not an object")
    return value


def _check_depth(value: Any, depth: int, max_depth: int) -> None:
    if depth > max_depth:
        raise PayloadError(f"nesting deeper than {max_depth} levels")
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    )
    for child in children:
        _check_depth(child, depth + 1, max_depth)


_KEY_PART = re.compile(r"\[([^\[\]]*)\]")


def _decode_form(text: str) -> Mapping[str, Any]:
    """Read PHP-style keys (`data[items][0][uuid]=...`) into nested dicts and lists."""
    try:
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=True, max_num_fields=MAX_KEYS
        )
    except ValueError as exc:
        raise PayloadError(f"malformed form body: {str(exc)[:120]}") from None
    root: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        path = [head, *_KEY_PART.findall("[" + rest)] if rest else [head]
        if len(path) > MAX_DEPTH:
            raise PayloadError(f"form key nested deeper than {MAX_DEPTH} levels")
        node = root
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise PayloadError(f"form key {key!r} conflicts with a plain value")
            node = child
        node[path[-1]] = value
    return _lists_from_indexes(root)


def _lists_from_indexes(node: Any) -> Any:
    # {"0": a, "1": b} from `items[0]`, `items[1]` becomes [a, b].
    if not isinstance(node, dict):
        return None if node == "" else node
    converted = {key: _lists_from_indexes(value) for key, value in node.items()}
    keys = list(converted)
    if keys and all(key.isascii() and key.isdigit() for key in keys):
        return [converted[key] for key in sorted(keys, key=int)]
    return converted
