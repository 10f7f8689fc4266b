"""The schema is Alembic's: models and migrations agree, and every migration reverses."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from tests.common.databases import new_database_url
from webhook_app.infra.migrate import alembic_config, check_schema
from webhook_app.models import Base


def test_models_and_migrations_agree(database_url: str) -> None:
    check_schema(database_url)  # raises when autogenerate would find a change


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_every_migration_downgrades_and_upgrades_again(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = new_database_url(kind, tmp_path, request)
    config = alembic_config(url)
    command.downgrade(config, "base")
    engine = create_engine(url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    command.upgrade(config, "head")
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()
    check_schema(url)


def test_storage_parameters_of_the_models_are_migrated(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Autogenerate compares no storage parameters: this does, for every table that sets some.
    url = new_database_url("postgres", tmp_path, request)
    wanted = {
        name: {
            key: str(value) for key, value in table.dialect_options["postgresql"]["with"].items()
        }
        for name, table in Base.metadata.tables.items()
        if table.dialect_options["postgresql"]["with"]
    }
    assert wanted  # job_items sets its fillfactor
    engine = create_engine(url)
    with engine.connect() as connection:
        found = {
            name: dict(option.split("=", 1) for option in options or ())
            for name, options in connection.execute(
                text("SELECT relname, reloptions FROM pg_class WHERE relname = ANY(:names)"),
                {"names": list(wanted)},
            )
        }
    engine.dispose()
    assert found == wanted
