"""Each worker says, every few seconds, that it runs and whether it reaches its broker.

Runs in a thread of the worker's main process, from when its pool is up (or soon after it was
set up, if it never gets a broker connection: then it says so, in its log at once and every
minute after, and through /readyz). The check uses a connection of its own, never the app's
pools: pool children are forked from this process, and must not inherit a lock this thread
happens to hold.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from typing import Any

from celery.signals import celeryd_after_setup, worker_ready, worker_shutdown
from kombu import Connection

from webhook_app.extensions import settle
from webhook_app.infra.db import Database
from webhook_app.infra.queue import broker_tls, describe_broker
from webhook_app.infra.redaction import Redactor, settings_secrets
from webhook_app.models import utcnow
from webhook_app.services import heartbeats
from webhook_app.settings import Settings

log = logging.getLogger("webhook_app.worker")

LOUD_EVERY = 60.0
# The longest the first beat waits for the pool to be forked and the consumer to connect.
FIRST_BEAT_WITHIN = 10.0


class Heartbeat:
    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name
        self.broker = describe_broker(settings)
        self.redact = Redactor(settings_secrets(settings))
        self.db = Database(settings.database_url, pool_size=1)
        # Pool children must not use (or close) the parent's connection.
        os.register_at_fork(after_in_child=lambda: self.db.dispose(close=False))
        self.started_at = utcnow()
        self.stopped = threading.Event()
        self.ready = threading.Event()
        self._said: tuple[str, float] | None = None

    def broker_state(self) -> tuple[str, str | None]:
        url = self.settings.broker_url
        try:
            if url.startswith("sqla+sqlite:///"):
                # kombu's SQLAlchemy transport shares one engine cache and lock per process.
                with sqlite3.connect(url.removeprefix("sqla+sqlite:///"), timeout=2) as db:
                    db.execute("SELECT 1")
            else:
                ssl = broker_tls(self.settings) or False
                with Connection(url, ssl=ssl, connect_timeout=2) as connection:
                    connection.ensure_connection(max_retries=1, timeout=2)
        except Exception as exc:  # whatever it is, the worker cannot get its messages
            detail = self.redact(f"{type(exc).__name__}: {exc}")[:200]
            return heartbeats.BROKER_UNREACHABLE, detail
        return heartbeats.OK, None

    def beat(self) -> None:
        state, detail = self.broker_state()
        self._say(state, detail)
        try:
            with self.db.transaction() as session:
                heartbeats.record(
                    session,
                    self.name,
                    broker=self.broker,
                    state=state,
                    detail=detail,
                    started_at=self.started_at,
                    now=utcnow(),
                )
        except Exception as exc:  # the database may be away too; the next beat tries again
            log.warning("could not record the worker's heartbeat: %s", type(exc).__name__)

    def _say(self, state: str, detail: str | None) -> None:
        now = utcnow().timestamp()
        previous = self._said
        if state == heartbeats.OK:
            if previous and previous[0] != heartbeats.OK:
                log.info("the broker %s is reachable again", self.broker)
            self._said = (state, now)
            return
        if previous is None or previous[0] == heartbeats.OK or now - previous[1] >= LOUD_EVERY:
            log.error(
                "THIS WORKER CANNOT REACH ITS BROKER %s (%s): no job is being worked on",
                self.broker,
                detail,
            )
            self._said = (state, now)

    def run(self) -> None:
        self.ready.wait(FIRST_BEAT_WITHIN)
        while not self.stopped.is_set():
            self.beat()
            self.stopped.wait(heartbeats.HEARTBEAT_INTERVAL)

    def stop(self) -> None:
        self.stopped.set()
        try:
            with self.db.transaction() as session:
                heartbeats.forget(session, self.name)
        except Exception:  # not forgotten: it falls silent and ages out
            pass
        self.db.dispose()


_heartbeat: Heartbeat | None = None


@celeryd_after_setup.connect
def _started(sender: str, **_: Any) -> None:
    global _heartbeat
    _heartbeat = Heartbeat(settle(), f"{sender} (pid {os.getpid()})")
    threading.Thread(target=_heartbeat.run, name="heartbeat", daemon=True).start()


@worker_ready.connect
def _ready(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.ready.set()


@worker_shutdown.connect
def _stopping(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
