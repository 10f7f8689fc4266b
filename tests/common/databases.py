"""The databases and services the tests use: their addresses, and fresh migrated databases."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from webhook_app.infra.migrate import upgrade

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def create_postgres_database(server_url: str) -> str:
    """A new, empty database on the server; dropped by drop_postgres_database."""
    name = f"webhook_app_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(server_url: str, url: str) -> None:
    name = make_url(url).database
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def new_database_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A migrated, empty database of the given kind, removed at the end of the test(s)."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'webhook_app.sqlite3'}"
    else:
        server = request.getfixturevalue("postgres_server")
        url = create_postgres_database(server)
        request.addfinalizer(lambda: drop_postgres_database(server, url))
    upgrade(url)
    return url
