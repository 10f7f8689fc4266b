"""Per-job callback tokens: an HMAC of the job id, checked in constant time."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

TOKEN_LENGTH = 32  # base64url characters: 192 bits of the HMAC


def callback_token(secret: str, job_id: str) -> str:
    digest = hmac.new(secret.encode(), b"callback:" + job_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()[:TOKEN_LENGTH]


def verify_callback_token(secrets: Iterable[str], job_id: str, token: str) -> bool:
    """True when any secret signs this job id with this token (old secrets keep verifying)."""
    candidate = token.encode()[:200]
    matched = False
    # Every secret is tried, so the time taken does not say which one matched.
    for secret in secrets:
        matched |= hmac.compare_digest(callback_token(secret, job_id).encode(), candidate)
    return matched


def matches_any(known: Iterable[str], presented: str) -> bool:
    """Constant-time membership for bearer tokens."""
    candidate = presented.encode()
    matched = False
    for token in known:
        matched |= hmac.compare_digest(token.encode(), candidate)
    return matched
