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
NOT_ALLOWED_MARKER = "[sandbox:not-allowed]"


# How each failure is named on the wire. "sdk": the names the API answers with, as the
# official PHP SDK knows them (a refused session, key and value are all errorcode 403;
# internal errors and missing items are errorcode 0). "plain": generic names some compatible
# servers use. A message of None is the one the failure was raised with.
ERROR_NAMES: dict[str, dict[str, tuple[int, str | None, str]]] = {
    "sdk": {
        "session": (403, "Session ID invalid or session is expired", "EAPI\\EIllegalSession"),
        "api_key": (
            403,
            "The API key is illegal, use correct characters and API key length",
            "EAPI\\EIllegalApiKey",
        ),
        "login": (404, "This login does not exist. Please try again.", "EUser\\Authentication"),
        "invalid_param": (400, None, "EApi\\EInvalidParam"),
        "value_not_allowed": (403, None, "EAPI\\EValueNotAllowed"),
        "undefined_command": (400, "dp_command should be specified", "EAPI\\EUndefinedCommand"),
        "not_found": (0, None, "NotFoundItemException"),
        "internal": (0, "Internal error", "EApi\\EInternalError"),
        "unavailable": (503, "Service temporarily unavailable", "ServiceUnavailableError"),
        "rate_limited": (429, "Too many requests", "TooManyRequestsError"),
    },
    "plain": {
        "session": (403, "Session ID invalid or session is expired", "AuthenticationError"),
        "api_key": (401, "Invalid API key", "AuthenticationError"),
        "login": (401, "Invalid login or password", "AuthenticationError"),
        "invalid_param": (400, None, "ValidationError"),
        "value_not_allowed": (400, None, "ValidationError"),
        "undefined_command": (400, "Unknown command", "ValidationError"),
        "not_found": (400, None, "ValidationError"),
        "internal": (503, "Service temporarily unavailable", "ServiceUnavailableError"),
        "unavailable": (503, "Service temporarily unavailable", "ServiceUnavailableError"),
        "rate_limited": (429, "Too many requests", "TooManyRequestsError"),
    },
}
ERROR_STYLES = tuple(ERROR_NAMES)


class EnvelopeFailure(Exception):
    """A failure answered inside the envelope (the HTTP status stays 200); `failure` is one
    of the keys of ERROR_NAMES, named on the wire by the sandbox's `error_names` knob."""

    def __init__(self, failure: str, errormsg: str | None = None) -> None:
        super().__init__(errormsg or failure)
        self.failure = failure
        self.errormsg = errormsg

    def wire(self, style: str) -> tuple[int, str, str]:
        """errorcode, errormsg and exception as `style` names them."""
        errorcode, default_message, exception = ERROR_NAMES[style][self.failure]
        return errorcode, self.errormsg or default_message or self.failure, exception


def invalid_api_key() -> EnvelopeFailure:
    return EnvelopeFailure("api_key")


def invalid_session() -> EnvelopeFailure:
    return EnvelopeFailure("session")


def validation_error(message: str) -> EnvelopeFailure:
    return EnvelopeFailure("invalid_param", message)


def value_not_allowed(message: str) -> EnvelopeFailure:
    return EnvelopeFailure("value_not_allowed", message)


def not_found(message: str) -> EnvelopeFailure:
    return EnvelopeFailure("not_found", message)


# Alternated so a client sees both transient shapes early in a run.
TRANSIENT_ERRORS = ("internal", "unavailable")


def timestamp(now: float | None = None) -> str:
    """The envelope timestamp: UTC, `YYYY-MM-DD HH:MM:SS`, no zone, like the real API."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now))


def success_envelope(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` is either `{"data": ...}` or top-level keys such as login's `sessionid`."""
    return {"timestamp": timestamp(), "version": API_VERSION, "type": "success", **fields}


def failure_envelope(error: EnvelopeFailure, style: str = "sdk") -> dict[str, Any]:
    errorcode, errormsg, exception = error.wire(style)
    return {
        "timestamp": timestamp(),
        "version": API_VERSION,
        "type": "failure",
        "error": {"errorcode": errorcode, "errormsg": errormsg, "exception": exception},
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
    if NOT_ALLOWED_MARKER in prompt:
        raise value_not_allowed("The value of dp_prompt is not allowed")
