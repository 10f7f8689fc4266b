"""The server-less Celery broker: kombu's SQLAlchemy transport over a SQLite file, polled often.

kombu's SQLAlchemy transport hands every transport option to create_engine, so its polling
interval (one second by default) cannot be set as an option; with late acknowledgement and
one message per worker process, that interval caps each process at one task a second.
Celery reads CELERY_BROKER_URL itself, so the `sqla+` URL cannot be rewritten either: the
`sqla` alias is pointed at this subclass instead.
"""

from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES, sqlalchemy


class Transport(sqlalchemy.Transport):
    polling_interval = 0.05


def use_fast_polling() -> None:
    TRANSPORT_ALIASES["sqla"] = f"{__name__}:Transport"
