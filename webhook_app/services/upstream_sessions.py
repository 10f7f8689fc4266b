"""The Depositphotos login session, kept in the database so every worker shares it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from webhook_app.db import Database
from webhook_app.models import UpstreamSession
from webhook_app.upstream import CachedSession

NAME = "depositphotos"


class DatabaseSessionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def load(self) -> CachedSession | None:
        with self._db.transaction() as session:
            row = session.scalar(select(UpstreamSession).where(UpstreamSession.name == NAME))
            if row is None:
                return None
            return CachedSession(row.session_id, row.obtained_at.timestamp())

    def save(self, cached: CachedSession) -> None:
        row = UpstreamSession(
            name=NAME,
            session_id=cached.session_id,
            obtained_at=datetime.fromtimestamp(cached.obtained_at, UTC),
        )
        try:
            with self._db.transaction() as session:
                session.merge(row)
        except IntegrityError:
            pass  # another worker stored its fresh session first; both are valid

    def discard(self, session_id: str) -> None:
        # Only the session that failed is dropped: another worker may already have renewed it.
        with self._db.transaction() as session:
            session.execute(
                delete(UpstreamSession).where(
                    UpstreamSession.name == NAME, UpstreamSession.session_id == session_id
                )
            )
