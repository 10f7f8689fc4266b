"""Engines and sessions. The boundary (request, task) owns the transaction."""

from __future__ import annotations

import select
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import psycopg
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import ClauseElement

from webhook_app import changes  # noqa: F401 (every session records job changes)
from webhook_app.infra.queue import FOLLOW_UP
from webhook_app.infra.statements import OneStatement


def make_engine(url: str, *, pool_size: int = 5, autocommit: bool = False) -> Engine:
    """An engine tuned for several processes sharing one database. An `autocommit` one
    (PostgreSQL) runs every statement as its own transaction, and its connections stay so:
    nothing is switched on checkout or reset on return."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        pooled: dict[str, Any] = {}
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            pooled = {"pool_size": pool_size}
        engine = create_engine(url, connect_args={"timeout": 30}, **pooled)
        _serialize_sqlite_writers(engine)
        return engine
    # Fail fast when the database is away: the receiver must answer 503 quickly, not hang.
    connect_args: dict[str, Any] = {"connect_timeout": 1, "cursor_factory": DescribedWhenRead}
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=1,
        connect_args=connect_args,
        **({"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None} if autocommit else {}),
    )
    _discard_dead_connections(engine)
    return engine


class DescribedWhenRead(psycopg.Cursor[Any]):
    """A cursor whose columns are described only when the description is read.

    SQLAlchemy asks for the description after every statement, but for one it has run before
    it only checks that there is one; psycopg builds an object per column each time it is
    asked (a tenth of a millisecond for a job read with its items and archives)."""

    @property
    def description(self) -> Sequence[psycopg.Column] | None:  # type: ignore[override]
        result = self.pgresult
        if result is None or not (result.nfields or result.status in _RETURNS_ROWS):
            return None
        return _Columns(self, result)


_RETURNS_ROWS = frozenset(
    {
        psycopg.pq.ExecStatus.TUPLES_OK,
        psycopg.pq.ExecStatus.SINGLE_TUPLE,
        psycopg.pq.ExecStatus.TUPLES_CHUNK,
    }
)


class _Columns(Sequence[psycopg.Column]):
    """The description of the cursor's current result, built at its first read."""

    def __init__(self, cursor: psycopg.Cursor[Any], result: Any) -> None:
        self._cursor, self._result = cursor, result
        self._columns: list[psycopg.Column] | None = None

    def __len__(self) -> int:
        return int(self._result.nfields)

    def __getitem__(self, index: Any) -> Any:
        if self._columns is None:
            # psycopg describes the cursor's current result: this one, unless it has moved on.
            if self._cursor.pgresult is not self._result:
                raise RuntimeError("the description of a result its cursor has left")
            described = psycopg.Cursor.description.fget(self._cursor)  # type: ignore[attr-defined]
            self._columns = described or []
        return self._columns[index]


def _discard_dead_connections(engine: Engine) -> None:
    # An idle connection hears nothing from the server unless it is going away: a terminated
    # backend or a stopping server sends its farewell and closes the socket. So a pooled
    # connection whose socket is readable (or closed) is dead, and a syscall finds it out,
    # where a liveness ping would cost a round trip on every request. The pool replaces it.
    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        try:
            readable, _, _ = select.select([dbapi_connection.fileno()], [], [], 0)
        except (OSError, ValueError, psycopg.Error):
            readable = [True]
        if readable:
            raise DisconnectionError("the server closed this connection")


def _serialize_sqlite_writers(engine: Engine) -> None:
    # pysqlite's implicit BEGIN lets two processes read then both try to upgrade to a write
    # lock, and one fails with "database is locked". BEGIN IMMEDIATE takes the write lock up
    # front, so transactions queue behind busy_timeout instead; WAL keeps readers unblocked.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A connection that only reads never upgrades, so it need not queue behind writers.
        reads = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if reads else "BEGIN IMMEDIATE")


READ_ONLY = "webhook_app_read_only"


class Sender(Protocol):
    def send(self, name: str, *args: Any) -> bool: ...


Unsent = Callable[[Session], object]


def after_commit(
    session: Session,
    task: str,
    *args: Any,
    if_unsent: Unsent | None = None,
    gathered: int = 0,
) -> None:
    """Ask for a task to be sent once this session's transaction has committed.

    Services call this instead of enqueueing, so a task never runs before the change that
    caused it is visible, and a rolled-back change sends nothing. The same request made
    twice in one transaction is sent once. A task `gathered` by N takes any number of keys
    as its arguments: every such request of the transaction goes out in parts of at most N
    keys, and the parts of different gathered tasks travel together, one of each per
    FOLLOW_UP message (a batch of callbacks asks for its archives, media data and finished
    jobs in one message, not one each). When the broker refuses the task, `if_unsent`
    records that in a transaction of its own, where people look.
    """
    if gathered:
        keys = session.info.setdefault("gathered", {}).setdefault((task, gathered), {})
        keys.update(dict.fromkeys(args))
        return
    session.info.setdefault("after_commit", {})[(task, args)] = None
    if if_unsent is not None:
        session.info.setdefault("if_unsent", {})[(task, args)] = if_unsent


def follow_ups(session: Session) -> list[tuple[str, tuple[Any, ...]]]:
    """What `after_commit` asked for in this session so far, task by task, in the order it
    was asked (gathered tasks in their parts)."""
    requests = list(session.info.get("after_commit", {}))
    for task, parts in _parts(session).items():
        requests += [(task, part) for part in parts]
    return requests


def _messages(session: Session) -> list[tuple[str, tuple[Any, ...]]]:
    """The messages that carry the session's follow-ups."""
    messages = list(session.info.get("after_commit", {}))
    parts = _parts(session)
    for n in range(max(map(len, parts.values()), default=0)):
        together = {task: chunks[n] for task, chunks in parts.items() if n < len(chunks)}
        if len(together) == 1:
            messages += together.items()
        else:
            messages.append((FOLLOW_UP, tuple(together.items())))
    return messages


def _parts(session: Session) -> dict[str, list[tuple[Any, ...]]]:
    parts: dict[str, list[tuple[Any, ...]]] = {}
    for (task, at_most), keys in session.info.get("gathered", {}).items():
        listed = list(keys)
        chunks = parts.setdefault(task, [])
        chunks += [
            tuple(listed[start : start + at_most]) for start in range(0, len(listed), at_most)
        ]
    return parts


def restore_follow_ups(session: Session, kept: Any) -> None:
    """Put the session's follow-ups back as `snapshot_follow_ups` found them: what a part
    of the transaction rolled back to a savepoint asked for must not be sent."""
    session.info["after_commit"], session.info["gathered"] = kept


def snapshot_follow_ups(session: Session) -> Any:
    """The session's follow-ups as they stand, for `restore_follow_ups`."""
    return (
        dict(session.info.get("after_commit", {})),
        {task: dict(keys) for task, keys in session.info.get("gathered", {}).items()},
    )


class Database:
    """An engine, its session factory, and where follow-up tasks go after a commit."""

    def __init__(self, url: str, *, pool_size: int = 5, sender: Sender | None = None) -> None:
        self.engine = make_engine(url, pool_size=pool_size)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.sender = sender
        # PostgreSQL reads (and stores a callback) one statement at a time, sparing a BEGIN
        # and a COMMIT per request, on connections of their own; SQLite keeps its transaction
        # (its BEGIN IMMEDIATE queues writers).
        autocommit = self.engine.dialect.name != "sqlite"
        self._reading = (
            make_engine(url, pool_size=pool_size, autocommit=True) if autocommit else None
        )
        self._readers = (
            sessionmaker(self._reading, expire_on_commit=False) if self._reading else None
        )

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One session, one transaction: committed on success, rolled back on error."""
        with self.sessions.begin() as session:
            yield session
        requests = _messages(session)
        unsent_hooks = session.info.pop("if_unsent", {})
        session.info.pop("after_commit", None)
        session.info.pop("gathered", None)
        if self.sender is None:
            return
        for task, args in requests:
            if not self.sender.send(task, *args) and (task, args) in unsent_hooks:
                with self.sessions.begin() as record:
                    unsent_hooks[task, args](record)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session that only reads. Statements may see different moments: what reads
        several rows that must agree with each other uses a transaction instead."""
        if self._readers is None:
            with self.transaction() as session:
                yield session
            return
        with self._readers() as session:
            yield session

    @contextmanager
    def connection(self, *, writes: bool = False) -> Iterator[Connection]:
        """A connection without a Session, for the hottest paths (they spare building and
        closing one). On PostgreSQL every statement is its own transaction (no BEGIN, no
        COMMIT: a write of one statement is committed when it returns); on SQLite the block is
        one transaction, committed on leaving, that takes the write lock only if it `writes`."""
        if self._reading is None:
            with self.engine.connect() as connection:
                connection.execution_options(**{READ_ONLY: not writes})
                with connection.begin():
                    yield connection
            return
        with self._reading.connect() as connection:
            yield connection

    def statement(self, statement: ClauseElement) -> OneStatement:
        """`statement` compiled once, to run on its own and commit as it returns (on PostgreSQL
        on the autocommit connections; SQLite commits a lone statement itself)."""
        return OneStatement(self._reading or self.engine, statement)

    @property
    def engines(self) -> tuple[Engine, ...]:
        """Every engine this database's statements go through."""
        return (self.engine,) if self._reading is None else (self.engine, self._reading)

    def dispose(self, *, close: bool = True) -> None:
        """Let go of every pooled connection (`close=False` after a fork: they belong to the
        parent, which goes on using them)."""
        self.engine.dispose(close=close)
        if self._reading is not None:
            self._reading.dispose(close=close)
