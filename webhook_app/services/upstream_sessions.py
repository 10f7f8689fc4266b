"""The Depositphotos login session, kept in the database so every worker shares it."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from webhook_app.db import Database
from webhook_app.models import UpstreamSession
from webhook_app.upstream import CachedSession

NAME = "depositphotos"


class DatabaseSessionStore:
    """Kept in the database, remembered by each process for `remember` seconds.

    Every upstream call needs the session, and reading it each time would cost a database
    transaction per call. A copy a few seconds old is safe: a session another worker dropped
    is refused upstream, and the client then discards it here and logs in again.
    """

    def __init__(
        self, db: Database, *, remember: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._db = db
        self._remember = remember
        self._clock = clock
        self._copy: tuple[float, CachedSession | None] | None = None

    def load(self) -> CachedSession | None:
        if self._copy is not None and self._clock() - self._copy[0] < self._remember:
            return self._copy[1]
        with self._db.transaction() as session:
            row = session.scalar(select(UpstreamSession).where(UpstreamSession.name == NAME))
            cached = CachedSession(row.session_id, row.obtained_at.timestamp()) if row else None
        self._copy = (self._clock(), cached)
        return cached

    def save(self, cached: CachedSession) -> None:
        row = UpstreamSession(
            name=NAME,
            session_id=cached.session_id,
            obtained_at=datetime.fromtimestamp(cached.obtained_at, UTC),
        )
        self._copy = (self._clock(), cached)
        try:
            with self._db.transaction() as session:
                session.merge(row)
        except IntegrityError:
            pass  # another worker stored its fresh session first; both are valid

    def discard(self, session_id: str) -> None:
        self._copy = None
        # Only the session that failed is dropped: another worker may already have renewed it.
        with self._db.transaction() as session:
            session.execute(
                delete(UpstreamSession).where(
                    UpstreamSession.name == NAME, UpstreamSession.session_id == session_id
                )
            )
