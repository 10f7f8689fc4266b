"""The connection pool and the shared upstream session, against real databases."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, event, literal, select, text

from webhook_app.depositphotos.client import CachedSession
from webhook_app.infra.db import Database, make_engine
from webhook_app.services.upstream_sessions import DatabaseSessionStore, session_key
from webhook_app.settings import Settings
from webhook_app.tools.stack import wait_until


@pytest.mark.postgres
def test_a_pooled_connection_the_server_ended_is_replaced_at_checkout(
    postgres_server: str,
) -> None:
    engine = make_engine(postgres_server, pool_size=1)
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            first = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with admin.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
            wait_until(
                lambda: (
                    not connection.execute(
                        text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid"), {"pid": first}
                    ).first()
                ),
                10,
                "the backend to end",
            )
        with engine.connect() as connection:  # the dead one is noticed without an error
            second = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert second != first
    finally:
        engine.dispose()
        admin.dispose()


def test_the_upstream_session_is_remembered_briefly_and_forgotten_when_discarded(
    database: Database,
) -> None:
    now = [1000.0]
    key = session_key("k", "u", "p")
    reader = DatabaseSessionStore(database, key, remember=30, clock=lambda: now[0])
    writer = DatabaseSessionStore(database, key)
    with database.transaction() as session:
        session.execute(text("DELETE FROM upstream_sessions"))
    assert reader.load() is None

    writer.save(CachedSession("fresh-session", time.time()))
    assert reader.load() is None  # remembered for a while: no database read per call
    now[0] += 31
    loaded = reader.load()
    assert loaded is not None and loaded.session_id == "fresh-session"

    reader.discard("fresh-session")  # refused upstream: the next load reads again
    assert reader.load() is None
    with database.transaction() as session:
        session.execute(text("DELETE FROM upstream_sessions"))


def test_a_fresh_session_is_stored_even_when_another_worker_drops_the_old_one_meanwhile(
    database: Database,
) -> None:
    key = session_key("k", "u", "p")
    mine, other = DatabaseSessionStore(database, key), DatabaseSessionStore(database, key)
    mine.save(CachedSession("old-session", 1000.0))
    # Another worker, refused with the old session, drops it while this one stores its new
    # session: right after the first statement of the save.
    racers: list[threading.Thread] = []

    def race(*_: object) -> None:
        if not racers:
            racers.append(threading.Thread(target=other.discard, args=("old-session",)))
            racers[0].start()
            racers[0].join(timeout=1)  # done, or waiting for this save's lock

    event.listen(database.engine, "after_cursor_execute", race)
    try:
        mine.save(CachedSession("new-session", 2000.0))
    finally:
        event.remove(database.engine, "after_cursor_execute", race)
        racers[0].join(timeout=10)
    reader = DatabaseSessionStore(database, key, remember=0)
    assert reader.load() == CachedSession("new-session", 2000.0)
    with database.transaction() as session:
        session.execute(text("DELETE FROM upstream_sessions"))


@pytest.mark.postgres
def test_storing_the_session_never_fails_the_call_it_was_made_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    away = Database("postgresql+psycopg://postgres@127.0.0.1:9/nowhere")  # nothing listens
    store = DatabaseSessionStore(away, session_key("k", "u", "p"), remember=30)
    try:
        store.save(CachedSession("fresh-session", 1000.0))
    finally:
        away.dispose()
    assert store.load() == CachedSession("fresh-session", 1000.0)  # this process still has it
    assert "could not store the upstream session (OperationalError)" in caplog.text
    assert "fresh-session" not in caplog.text


def test_a_web_process_keeps_a_connection_for_each_of_its_threads(
    app: Any, settings: Settings
) -> None:
    # Every thread holding a connection at once, round after round, as a busy web process
    # does: a pool smaller than the threads would open (and close) the extra ones each round.
    db = app.extensions["webhook_app"].db
    opened: list[object] = []
    for engine in db.engines:
        event.listen(engine, "connect", lambda *_: opened.append(None))
    threads = settings.web_threads
    together = threading.Barrier(threads)

    def hold() -> None:
        with db.connection() as connection:
            connection.execute(text("SELECT 1"))
            together.wait(10)

    for _ in range(3):
        workers = [threading.Thread(target=hold) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    assert len(opened) <= threads


@pytest.mark.postgres
def test_a_statement_run_before_reads_no_column_description(
    postgres_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    described: list[int] = []
    build = psycopg.Column.__init__

    def counted(column: psycopg.Column, cursor: Any, index: int) -> None:
        described.append(index)
        build(column, cursor, index)

    monkeypatch.setattr(psycopg.Column, "__init__", counted)
    engine = make_engine(postgres_server)
    query = select(literal(1).label("one"), literal("a").label("two"))
    try:
        with engine.connect() as connection:
            described.clear()  # what connecting asked the server
            assert connection.execute(query).one()._asdict() == {"one": 1, "two": "a"}
            assert described == [0, 1]  # the first run describes its columns
            assert connection.execute(query).one()._asdict() == {"one": 1, "two": "a"}
            assert described == [0, 1]
            assert list(connection.execute(text("SELECT 2 AS x")).keys()) == ["x"]
            assert not connection.execute(text("CREATE TEMP TABLE t (a int)")).returns_rows
            assert connection.execute(text("SELECT FROM t")).all() == []
    finally:
        engine.dispose()
