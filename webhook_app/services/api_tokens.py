"""Query API tokens made and revoked by an operator; only a hash of each is stored.

A token is 256 random bits, so a plain SHA-256 is enough to make the stored hash useless to
whoever reads the database; no slow password hash is needed.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from webhook_app.models import ApiToken

READ = "read"
WRITE = "write"  # read and write: creating jobs, refresh, and anything else that acts
SCOPES = (READ, WRITE)
# Recognisable in a leaked file, and lets the API skip the database for other strings.
PREFIX = "wha_"
MAX_NAME = 100
MAX_TOKEN = 200


@dataclass(frozen=True)
class Holder:
    """Who presented a valid token: an API_TOKENS entry (no id), or a token made by the CLI."""

    scope: str
    token_id: int | None = None
    name: str | None = None
    daily_limit: int | None = None

    @classmethod
    def of(cls, row: ApiToken) -> Holder:
        return cls(row.scope, row.id, row.name, row.daily_limit)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def grants(scope: str | None, needed: str) -> bool:
    """True when a token of `scope` may do what needs `needed` (write includes read)."""
    return scope == WRITE or (scope == READ and needed == READ)


def create_token(
    session: Session, *, name: str, scope: str, now: datetime, daily_limit: int | None = None
) -> tuple[ApiToken, str]:
    """Store a new token's hash; the token itself is returned once and never again."""
    if daily_limit is not None and daily_limit < 0:
        raise ValueError("daily limit must not be negative")
    name = name.strip()
    if not 0 < len(name) <= MAX_NAME or not name.isprintable():
        raise ValueError(f"name must be 1 to {MAX_NAME} printable characters")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        scope=scope,
        token_hash=hash_token(token),
        created_at=now,
        daily_limit=daily_limit,
    )
    session.add(row)
    session.flush()
    return row, token


def find_active(session: Session, token: str) -> ApiToken | None:
    """The unrevoked token this string is, if any."""
    if not token.startswith(PREFIX) or len(token) > MAX_TOKEN:
        return None
    return session.scalar(
        select(ApiToken).where(
            ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None)
        )
    )


def list_tokens(session: Session) -> Sequence[ApiToken]:
    return session.scalars(select(ApiToken).order_by(ApiToken.id)).all()


def revoke_token(session: Session, token_id: int, *, now: datetime) -> ApiToken | None:
    """Revoke at once (the next request with it is refused); None if there is no such token."""
    row = session.get(ApiToken, token_id, with_for_update=True)
    if row is not None and row.revoked_at is None:
        row.revoked_at = now
    return row
