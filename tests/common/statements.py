"""Recording the SQL a database's connections send, as the driver sees it.

SQLAlchemy's own events miss statements run straight on a DBAPI connection (the receiver's,
`infra.statements`), so statements are recorded by the connections themselves while they are
checked out: SQLite's trace callback, and a recording cursor on psycopg's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event

from webhook_app.infra.db import Database


@contextmanager
def recorded_statements(db: Database) -> Iterator[list[str]]:
    """Every statement `db`'s pooled connections send while the block runs."""
    seen: list[str] = []

    def checkout(connection: Any, _record: Any, _proxy: Any) -> None:
        if isinstance(connection, sqlite3.Connection):
            connection.set_trace_callback(seen.append)
        else:
            connection.cursor_factory = _recording(connection.cursor_factory, seen)

    def checkin(connection: Any, _record: Any) -> None:
        if isinstance(connection, sqlite3.Connection):
            connection.set_trace_callback(None)
        elif connection is not None:
            connection.cursor_factory = getattr(
                connection.cursor_factory, "recorded", connection.cursor_factory
            )

    for engine in db.engines:
        event.listen(engine, "checkout", checkout)
        event.listen(engine, "checkin", checkin)
    try:
        yield seen
    finally:
        for engine in db.engines:
            event.remove(engine, "checkout", checkout)
            event.remove(engine, "checkin", checkin)


@dataclass
class RoundTrips:
    """What a database sent while a `round_trips` block ran."""

    # Every statement in the order sent, each transaction's BEGIN and COMMIT among them.
    sent: list[str] = field(default_factory=list)
    # Commits through `db.engine`: a statement on an autocommit connection commits without one.
    transactions: int = 0

    @property
    def statements(self) -> list[str]:
        """What was sent, BEGIN and COMMIT aside."""
        return [sql for sql in self.sent if not sql.startswith(("BEGIN", "COMMIT"))]


@contextmanager
def round_trips(db: Database) -> Iterator[RoundTrips]:
    """What `db` sends while the block runs, and how many transactions it commits."""
    trips = RoundTrips()
    # psycopg sends BEGIN and COMMIT itself, not through a cursor, so they are told by the
    # engine's events; SQLite's trace already shows its own.
    postgres = db.engine.dialect.name == "postgresql"

    def began(_connection: Any) -> None:
        if postgres:
            trips.sent.append("BEGIN")

    def committed(_connection: Any) -> None:
        trips.transactions += 1
        if postgres:
            trips.sent.append("COMMIT")

    with recorded_statements(db) as seen:
        trips.sent = seen
        event.listen(db.engine, "begin", began)
        event.listen(db.engine, "commit", committed)
        try:
            yield trips
        finally:
            event.remove(db.engine, "begin", began)
            event.remove(db.engine, "commit", committed)
            # A connection still out keeps its recorder: what it sends later is not counted.
            trips.sent = list(seen)


def _recording(factory: Any, seen: list[str]) -> Any:
    original = getattr(factory, "recorded", factory)

    class Recording(original):  # type: ignore[misc, valid-type]
        recorded = original

        def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(str(query))
            return super().execute(query, *args, **kwargs)

        def executemany(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(str(query))
            return super().executemany(query, *args, **kwargs)

    return Recording
