"""The objects the web app and the workers share, built in one place from one Settings.

`settle` fixes a process's settings (and redacts their secrets from its logs) once;
`build_services` makes the database, the storage and the redactor from them. The app factory
keeps the result in `app.extensions` (`init_app`), and handlers reach it with `services()`;
the worker context adds its upstream client on top. Anything may import this module: it
imports neither the app factory nor the workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from flask import Flask, current_app

from webhook_app.archive.storage import Storage, storage_from_settings
from webhook_app.infra.db import Database
from webhook_app.infra.queue import Enqueuer
from webhook_app.infra.redaction import Redactor, install_redaction
from webhook_app.settings import Settings

EXTENSION = "webhook_app"


@dataclass
class Services:
    settings: Settings
    db: Database
    enqueuer: Enqueuer
    storage: Storage
    redactor: Redactor = field(default_factory=Redactor)


_settled: tuple[Settings, Redactor] | None = None


def settle(settings: Settings | None = None) -> Settings:
    """This process's settings: `settings` if given, else those settled before, else the
    environment's; settling them redacts their secrets from the process's log records.

    Pool children inherit what their parent settled across fork, so asking again neither
    reads the environment nor installs redaction a second time.
    """
    return _settle(settings)[0]


def _settle(settings: Settings | None) -> tuple[Settings, Redactor]:
    global _settled
    if _settled is None or (settings is not None and settings is not _settled[0]):
        settings = settings or Settings.from_env()
        _settled = (settings, install_redaction(settings))
    return _settled


def build_services(
    settings: Settings, *, enqueuer: Enqueuer, pool_size: int | None = None
) -> Services:
    """The database, storage and redactor of `settings`, sending tasks through `enqueuer`;
    `pool_size`, when given, bounds this process's database connections."""
    _, redactor = _settle(settings)
    db = (
        Database(settings.database_url, sender=enqueuer)
        if pool_size is None
        else Database(settings.database_url, pool_size=pool_size, sender=enqueuer)
    )
    return Services(
        settings=settings,
        db=db,
        enqueuer=enqueuer,
        storage=storage_from_settings(settings),
        redactor=redactor,
    )


def init_app(app: Flask, shared: Services) -> None:
    """Keep `shared` on `app`, where `services()` finds it while the app handles a request."""
    app.extensions[EXTENSION] = shared


def services() -> Services:
    """The shared objects of the app handling the current request."""
    return cast(Services, current_app.extensions[EXTENSION])
