"""Alembic environment: the URL comes from the caller or from DATABASE_URL."""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from alembic import context

from webhook_app.infra.db import make_engine
from webhook_app.models import Base, UTCDateTime
from webhook_app.settings import Settings

config = context.config
if config.config_file_name and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def render_item(kind: str, obj: Any, autogen_context: Any) -> str | bool:
    # Migrations name plain SQLAlchemy types, so they never import application code.
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


url = config.attributes.get("database_url") or Settings.from_env().database_url
engine = make_engine(url)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
