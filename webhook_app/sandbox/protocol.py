"""The Depositphotos wire vocabulary: envelopes, error codes and parameter rules."""

from __future__ import annotations

import time
from typing import Any

API_VERSION = "1.3"
MAX_PROMPT_LENGTH = 400
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9")
MEDIUMS = ("art", "photography")
FAIL_MARKER = "[sandbox:fail]"
REJECT_MARKER = "[sandbox:reject]"


class ApiError(Exception):
    """A failure answered inside the envelope (the HTTP status stays 200)."""

    def __init__(self, errorcode: int, errormsg: str, exception: str) -> None:
        super().__init__(errormsg)
        self.errorcode = errorcode
        self.errormsg = errormsg
        self.exception = exception


def invalid_api_key() -> ApiError:
    return ApiError(401, "Invalid API key", "AuthenticationError")


def invalid_session() -> ApiError:
    return ApiError(403, "Session ID invalid or session is expired", "AuthenticationError")


def validation_error(message: str) -> ApiError:
    return ApiError(400, message, "ValidationError")


# Alternated so a client sees both transient shapes early in a run.
TRANSIENT_ERRORS = (
    (503, "Service temporarily unavailable", "ServiceUnavailableError"),
    (429, "Too many requests", "TooManyRequestsError"),
)


def timestamp(now: float | None = None) -> str:
    """The envelope timestamp: UTC, `YYYY-MM-DD HH:MM:SS`, no zone, like the real API."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now))


def success_envelope(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` is either `{"data": ...}` or top-level keys such as login's `sessionid`."""
    return {"timestamp": timestamp(), "version": API_VERSION, "type": "success", **fields}


def failure_envelope(error: ApiError) -> dict[str, Any]:
    return {
        "timestamp": timestamp(),
        "version": API_VERSION,
        "type": "failure",
        "error": {
            "errorcode": error.errorcode,
            "errormsg": error.errormsg,
            "exception": error.exception,
        },
    }


def image_size(aspect_ratio: str, long_side: int = 1024) -> tuple[int, int]:
    """Width and height for an aspect ratio such as "16:9", the long side fixed."""
    across, down = (int(part) for part in aspect_ratio.split(":"))
    if across >= down:
        return long_side, round(long_side * down / across)
    return round(long_side * across / down), long_side


def check_generate_params(
    prompt: str, aspect_ratio: str, medium: str | None, callback_url: str | None
) -> None:
    """Raise a ValidationError naming the first invalid `imageGenerator.generate` parameter."""
    if not prompt.strip():
        raise validation_error("Parameter dp_prompt is required")
    if len(prompt) > MAX_PROMPT_LENGTH:
        raise validation_error(f"Parameter dp_prompt is longer than {MAX_PROMPT_LENGTH} characters")
    if aspect_ratio not in ASPECT_RATIOS:
        raise validation_error(
            f"Parameter dp_aspect_ratio must be one of {' '.join(ASPECT_RATIOS)}"
        )
    if medium is not None and medium not in MEDIUMS:
        raise validation_error(f"Parameter dp_medium must be one of {' '.join(MEDIUMS)}")
    if callback_url is not None and not callback_url.startswith(("http://", "https://")):
        raise validation_error("Parameter dp_callback_url must be an http(s) URL")
    if REJECT_MARKER in prompt:
        raise validation_error("Parameter dp_prompt was refused by content moderation")
