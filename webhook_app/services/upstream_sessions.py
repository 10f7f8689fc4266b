"""The Depositphotos login session, kept in the database so every worker shares it.

The session id is stored encrypted (AES-GCM) under a key derived from the Depositphotos
credentials: a copy of the database alone does not let anyone act as the account, and a
changed password or key makes the stored session unreadable, so workers simply log in again.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from webhook_app.depositphotos.client import CachedSession
from webhook_app.infra.db import Database
from webhook_app.models import UpstreamSession

log = logging.getLogger(__name__)

NAME = "depositphotos"
_VERSION = "v1."
_CONTEXT = b"webhook_app upstream session"


def session_key(api_key: str, login_user: str, login_password: str) -> bytes:
    """The 256-bit key that seals stored sessions, derived from the credentials."""
    material = "\0".join((api_key, login_user, login_password)).encode()
    return hashlib.sha256(_CONTEXT + b"\0" + material).digest()


def seal(key: bytes, session_id: str) -> str:
    nonce = os.urandom(12)
    sealed = nonce + AESGCM(key).encrypt(nonce, session_id.encode(), _CONTEXT)
    return _VERSION + base64.urlsafe_b64encode(sealed).decode()


def unseal(key: bytes, stored: str) -> str | None:
    """The session id, or None when it was sealed under other credentials (or never)."""
    if not stored.startswith(_VERSION):
        return None
    try:
        sealed = base64.urlsafe_b64decode(stored[len(_VERSION) :].encode())
        return AESGCM(key).decrypt(sealed[:12], sealed[12:], _CONTEXT).decode()
    except (InvalidTag, ValueError):
        return None


class DatabaseSessionStore:
    """Kept in the database, sealed, and remembered by each process for `remember` seconds.

    Every upstream call needs the session, and reading it each time would cost a database
    transaction per call. A copy a few seconds old is safe: a session another worker dropped
    is refused upstream, and the client then discards it here and logs in again.
    """

    def __init__(
        self,
        db: Database,
        key: bytes,
        *,
        remember: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._key = key
        self._remember = remember
        self._clock = clock
        self._copy: tuple[float, CachedSession | None] | None = None

    def load(self) -> CachedSession | None:
        if self._copy is not None and self._clock() - self._copy[0] < self._remember:
            return self._copy[1]
        with self._db.transaction() as session:
            row = session.scalar(select(UpstreamSession).where(UpstreamSession.name == NAME))
            # A row sealed under other credentials opens to None: as good as no session.
            session_id = unseal(self._key, row.session_id) if row is not None else None
            cached = None
            if row is not None and session_id is not None:
                cached = CachedSession(session_id, row.obtained_at.timestamp())
        self._copy = (self._clock(), cached)
        return cached

    def save(self, cached: CachedSession) -> None:
        row = UpstreamSession(
            name=NAME,
            session_id=seal(self._key, cached.session_id),
            obtained_at=datetime.fromtimestamp(cached.obtained_at, UTC),
        )
        self._copy = (self._clock(), cached)
        try:
            # Replaced whole, not merged: a merge reads the row first, and another worker may
            # discard it in between.
            with self._db.transaction() as session:
                session.execute(delete(UpstreamSession).where(UpstreamSession.name == NAME))
                session.add(row)
        except IntegrityError:
            pass  # another worker stored its fresh session first; both are valid
        except SQLAlchemyError as exc:
            # Sharing the session saves other workers a login; the call it was made for goes
            # on without it (failing here would strand a claimed submission).
            log.warning("could not store the upstream session (%s)", type(exc).__name__)

    def discard(self, session_id: str) -> None:
        self._copy = None
        # Only the session that failed is dropped: another worker may already have renewed
        # it. Sealing is randomised, so the row is compared by what it opens to.
        with self._db.transaction() as session:
            row = session.scalar(
                select(UpstreamSession).where(UpstreamSession.name == NAME).with_for_update()
            )
            if row is not None and unseal(self._key, row.session_id) in (session_id, None):
                session.execute(delete(UpstreamSession).where(UpstreamSession.name == NAME))
