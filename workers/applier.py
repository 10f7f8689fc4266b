"""Every worker applies stored callback deliveries, in a thread of its main process.

The receiver only stores deliveries; this thread claims them in batches and merges them
(`services.applying`). It needs no process of its own: one worker on one dyno applies them,
and each worker added shares the work (on PostgreSQL batches skip each other's rows). An
applier looks for pending deliveries every APPLY_POLL_INTERVAL, with one indexed read that
takes no lock when idle; a batch that was full, or took longer than the interval, is
followed by the next at once, so a delivery never waits for a pause on top of a batch. What
no applier takes (all workers down, say) is swept up by reconciliation.

Like the heartbeat, it uses a database of its own, never the pool children's, and starts once
the pool is forked.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery import current_app
from celery.signals import worker_ready, worker_shutdown

from webhook_app.extensions import settle
from webhook_app.infra.db import Database
from webhook_app.infra.queue import Enqueuer
from webhook_app.services.applying import anything_pending, apply_pending
from webhook_app.settings import Settings

log = logging.getLogger("webhook_app.worker")

# After an unexpected failure (the database away, say), the wait before trying again.
AFTER_FAILURE = 1.0


class Applier:
    def __init__(self, settings: Settings, enqueuer: Enqueuer) -> None:
        self.settings = settings
        self.db = Database(settings.database_url, pool_size=1, sender=enqueuer)
        # Pool children must not use (or close) the parent's connection.
        os.register_at_fork(after_in_child=lambda: self.db.dispose(close=False))
        self.stopped = threading.Event()

    def apply_once(self) -> int:
        """Apply one batch, if anything is pending; how many deliveries it applied."""
        if not anything_pending(self.db):
            return 0
        outcomes = apply_pending(
            self.db,
            limit=self.settings.apply_batch_size,
            recheck_after=self.settings.recheck_after,
        )
        return sum(outcomes.values())

    def run(self) -> None:
        while not self.stopped.is_set():
            began = time.monotonic()
            try:
                applied = self.apply_once()
            except Exception as exc:  # pending deliveries stay pending; try again soon
                log.warning("could not apply deliveries: %s", type(exc).__name__)
                self.stopped.wait(AFTER_FAILURE)
                continue
            self.stopped.wait(self.pause(applied, time.monotonic() - began))

    def pause(self, applied: int, took: float) -> float:
        """How long to wait before the next look, after one that applied `applied` deliveries
        in `took` seconds."""
        if applied >= self.settings.apply_batch_size:
            return 0.0  # more are likely waiting
        return max(0.0, self.settings.apply_poll_interval - took)

    def stop(self) -> None:
        self.stopped.set()


_applier: Applier | None = None
_thread: threading.Thread | None = None


@worker_ready.connect
def _ready(**_: Any) -> None:
    global _applier, _thread
    _applier = Applier(settle(), Enqueuer(current_app))
    _thread = threading.Thread(target=_applier.run, name="applier", daemon=True)
    _thread.start()


@worker_shutdown.connect
def _stopping(**_: Any) -> None:
    if _applier is not None and _thread is not None:
        _applier.stop()
        _thread.join(timeout=10)  # a batch under way commits, or is rolled back and re-claimed
        _applier.db.dispose()
