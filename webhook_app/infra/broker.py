"""The server-less Celery broker: kombu's SQLAlchemy transport over a SQLite file, polled often.

kombu's SQLAlchemy transport hands every transport option to create_engine, so its polling
interval (one second by default) cannot be set as an option; with late acknowledgement and
one message per worker process, that interval caps each process at one task a second.
Celery reads CELERY_BROKER_URL itself, so the `sqla+` URL cannot be rewritten either: the
`sqla` alias is pointed at this subclass instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kombu import transport
from kombu.transport import TRANSPORT_ALIASES, sqlalchemy
from sqlalchemy.exc import IntegrityError


class Channel(sqlalchemy.Channel):
    def _get_or_create(self, queue: str) -> Any:
        # kombu guards the creation of a queue's row within one process only: when web, worker
        # and beat start together, another process may create it first, and the worker would
        # stop with "Unrecoverable error". Its row is as good as ours.
        try:
            return super()._get_or_create(queue)
        except IntegrityError:
            self.session.rollback()
            return super()._get_or_create(queue)


class Transport(sqlalchemy.Transport):
    Channel = Channel
    polling_interval = 0.05


def use_fast_polling() -> None:
    TRANSPORT_ALIASES["sqla"] = f"{__name__}:Transport"
    # kombu remembers the class an alias resolved to: a `sqla+` connection made earlier in
    # this process would keep the slow stock transport.
    transport._transport_cache.pop("sqla", None)


def create_directory(url: str) -> None:
    """Make the folder of a `sqla+sqlite:///path` broker file, which SQLite will not."""
    path = url.removeprefix("sqla+sqlite:///")
    if path != url and path and not path.startswith(":memory:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
