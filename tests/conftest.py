"""Shared fixtures: real databases built by Alembic, a Flask app, and the services' addresses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from tests.common.databases import (
    POSTGRES_URL,
    REDIS_URL,
    REQUIRE_SERVICES,
    create_postgres_database,
    drop_postgres_database,
    new_database_url,
)
from tests.common.doubles import TEST_SECRET, TEST_TOKEN, ApplyingClient, RecordingEnqueuer
from webhook_app.infra.db import Database
from webhook_app.settings import Settings, normalize_database_url


def _unavailable(what: str, exc: Exception) -> None:
    reason = f"{what} unreachable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason}, and REQUIRE_SERVICES=1")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The PostgreSQL server's URL (psycopg 3 driver), or skip."""
    url = normalize_database_url(POSTGRES_URL)
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        _unavailable(f"PostgreSQL at {make_url(url).host}", exc)
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        client.ping()
    except Exception as exc:
        _unavailable("Redis", exc)
    return REDIS_URL


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    return new_database_url(request.param, tmp_path_factory.mktemp(request.param), request)


@pytest.fixture(scope="session")
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    yield db
    db.dispose()


@pytest.fixture
def session(database: Database) -> Iterator[Session]:
    """A session whose work is rolled back after the test (commits become savepoints)."""
    connection = database.engine.connect()
    transaction = connection.begin()
    session = Session(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    try:
        yield session
    finally:
        session.close()
        transaction.rollback()
        connection.close()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        environment="test",
        database_url=database_url,
        public_base_url="http://testserver",
        callback_secrets=(TEST_SECRET,),
        api_tokens=(TEST_TOKEN,),
    )


@pytest.fixture
def enqueuer() -> RecordingEnqueuer:
    return RecordingEnqueuer()


@pytest.fixture
def app(settings: Settings, enqueuer: RecordingEnqueuer) -> Any:
    from webhook_app.app import create_app

    application = create_app(settings, enqueuer=enqueuer)
    application.config["TESTING"] = True
    # Its test clients apply what a callback stored before the call returns.
    application.test_client_class = ApplyingClient
    yield application
    application.extensions["webhook_app"].db.dispose()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_TOKEN}"}


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    # Lets fixtures see whether the test failed, to print the processes' logs.
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _stack(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> Iterator[Any]:
    from webhook_app.tools.stack import Stack

    if kind == "sqlite":
        database = f"sqlite:///{tmp_path / 'webhook_app.sqlite3'}"
        broker = f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}"
    else:
        server = request.getfixturevalue("postgres_server")
        broker = request.getfixturevalue("redis_url")
        database = create_postgres_database(server)
        request.addfinalizer(lambda: drop_postgres_database(server, database))
    running = Stack(tmp_path, database, broker, RECONCILE_INTERVAL="2")
    running.kind = kind
    running.postgres_server = (
        request.getfixturevalue("postgres_server") if kind != "sqlite" else None
    )
    try:
        yield running
    finally:
        running.stop_all()
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            print(running.logs())


@pytest.fixture(params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The whole system as real processes: on SQLite with the server-less broker, and on
    PostgreSQL with Redis."""
    yield from _stack(request, tmp_path, request.param)


@pytest.fixture
def postgres_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The production shape only: PostgreSQL and Redis."""
    yield from _stack(request, tmp_path, "postgres")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print every chaos scenario's ledger, whether it balanced or not."""
    reports = terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
    lines = [
        str(value)
        for report in reports
        for name, value in getattr(report, "user_properties", [])
        if name == "ledger"
    ]
    if lines:
        terminalreporter.section("ledgers")
        for line in sorted(lines):
            terminalreporter.write_line(line)
