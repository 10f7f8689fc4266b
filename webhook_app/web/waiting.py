"""`GET /api/v1/jobs/<id>?wait=N`: hold the request until the job is terminal or N runs out.

A waiting request holds one gunicorn thread (gthread workers) but no database connection: it
reads the job's status in a short transaction, sleeps, and reads again. Each process lets at
most `MAX_WAITERS` requests wait at once; past that the job is answered at once, so waiting
clients can never take every thread from callbacks and the rest of the API.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from webhook_app.infra.db import Database
from webhook_app.services import jobs
from webhook_app.states import TERMINAL

# Every answer that could have waited names the server's cap, so clients never ask for more.
MAX_WAIT_HEADER = "X-Max-Wait"

FIRST_CHECK_AFTER = 0.2
LONGEST_CHECK_INTERVAL = 1.0


class Waiters:
    """A per-process cap on the requests that may wait at once."""

    def __init__(self, limit: int) -> None:
        self._slots = threading.BoundedSemaphore(limit)

    @contextmanager
    def slot(self) -> Iterator[bool]:
        """Yields whether a slot was free; never blocks."""
        acquired = self._slots.acquire(blocking=False)
        try:
            yield acquired
        finally:
            if acquired:
                self._slots.release()


def requested_wait(raw: str | None, cap: float) -> float:
    """The `wait` query parameter in seconds (0 when absent), held to at most `cap`.

    A longer wait is not refused: a client cannot know the cap before its first answer,
    which names it (MAX_WAIT_HEADER), and one held past the router's limit would be cut.
    """
    if raw is None or raw == "":
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:  # also refuses nan
        raise jobs.InvalidField("wait", "must be a number of seconds, 0 or more")
    return min(seconds, cap)


def hold(
    waiters: Waiters,
    seconds: float,
    done: Callable[[], bool],
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Ask `done` (a short read) until it says yes or `seconds` have passed, sleeping 0.2 s
    growing to 1 s in between. False when no waiting slot was free (answer at once)."""
    deadline = clock() + seconds
    interval = FIRST_CHECK_AFTER
    with waiters.slot() as acquired:
        if not acquired:
            return False
        while True:
            if done():
                return True
            remaining = deadline - clock()
            if remaining <= 0:
                return True
            sleep(min(interval, remaining))
            interval = min(interval * 1.5, LONGEST_CHECK_INTERVAL)


def wait_until_settled(
    db: Database,
    waiters: Waiters,
    public_id: str,
    seconds: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Return once the job is terminal or unknown, or `seconds` have passed.

    False when no waiting slot was free (the caller answers at once).
    """

    def settled() -> bool:
        with db.read() as session:
            status = jobs.status_of(session, public_id)
        return status is None or status in TERMINAL

    return hold(waiters, seconds, settled, clock=clock, sleep=sleep)
