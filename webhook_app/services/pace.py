"""One pace of upstream calls for the whole deployment, shared by every worker process.

Slots are handed out in turn, one every 1/rate seconds: a caller reserves the next free slot
and waits for it (a task by retrying itself with that countdown, never by polling), so a
burst of thousands of jobs goes out at the pace and each task runs once more at most. A
rate-limited answer pushes the next free slot past a shared time, slowing every worker.

The state lives in the broker's Redis when the broker is Redis (one atomic script per call,
on the server's clock), else in the database's `upstream_state` row under a row lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select

from webhook_app.depositphotos.client import Pacer, Unpaced
from webhook_app.infra.db import Database
from webhook_app.models import UpstreamState
from webhook_app.services.upstream_state import NAME, ensure_row

# KEYS: next free slot, slowed until. ARGV: interval, max_wait; 0 means no interval.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local slot = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'),
                      tonumber(redis.call('GET', KEYS[2]) or '0'))
local wait = slot - now
if wait <= tonumber(ARGV[2]) and interval > 0 then
  redis.call('SET', KEYS[1], tostring(slot + interval), 'EX', math.ceil(wait + interval) + 60)
end
return tostring(wait)
"""
_SLOWED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return tostring(math.max(0, tonumber(redis.call('GET', KEYS[1]) or '0') - now))
"""
_BACK_OFF = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
if until_ > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], tostring(until_), 'EX', math.ceil(tonumber(ARGV[1])) + 60)
end
return 1
"""


class RedisPacer:
    """The pace kept in Redis; keys are named after the deployment's queue."""

    def __init__(self, client: Any, rate: float, *, prefix: str) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._keys = [f"{prefix}:next-call", f"{prefix}:slow-until"]
        self._reserve = client.register_script(_RESERVE)
        self._slowed = client.register_script(_SLOWED)
        self._back_off = client.register_script(_BACK_OFF)

    def reserve(self, max_wait: float) -> float:
        return float(self._reserve(keys=self._keys, args=[self._interval, max_wait]))

    def slowed_for(self) -> float:
        return float(self._slowed(keys=self._keys[1:]))

    def back_off(self, seconds: float) -> None:
        self._back_off(keys=self._keys[1:], args=[seconds])


class DatabasePacer:
    """The pace kept in the `upstream_state` row: one short locked transaction per call."""

    def __init__(
        self, db: Database, rate: float, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._ready = False

    def _row(self, session: Any) -> UpstreamState:
        if not self._ready:
            ensure_row(session)
            self._ready = True
        row = session.scalar(
            select(UpstreamState).where(UpstreamState.name == NAME).with_for_update()
        )
        assert row is not None  # made by ensure_row, never deleted
        return row

    def reserve(self, max_wait: float) -> float:
        if not self._interval:
            return self.slowed_for()  # nothing to hand out: only a shared back-off to honour
        with self._db.transaction() as session:
            row = self._row(session)
            now = self._clock()
            slot = max(now, row.next_call_at, row.slow_until)
            wait = slot - now
            if wait <= max_wait:
                row.next_call_at = slot + self._interval
            return wait

    def slowed_for(self) -> float:
        with self._db.read() as session:
            until = session.scalar(
                select(UpstreamState.slow_until).where(UpstreamState.name == NAME)
            )
        return max(0.0, (until or 0.0) - self._clock())

    def back_off(self, seconds: float) -> None:
        with self._db.transaction() as session:
            row = self._row(session)
            row.slow_until = max(row.slow_until, self._clock() + seconds)


def make_pacer(
    db: Database,
    *,
    rate: float,
    broker_url: str,
    queue: str,
    tls: Mapping[str, Any] | None = None,
) -> Pacer:
    """Redis when the broker is Redis (with the broker's TLS options), else the database."""
    if broker_url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(
            broker_url, socket_timeout=5, socket_connect_timeout=2, **(tls or {})
        )
        return RedisPacer(client, rate, prefix=f"webhook_app:{queue}:pace")
    # With no rate nothing is spaced out, but a rate-limited answer still slows every worker.
    return DatabasePacer(db, rate)


__all__ = ["DatabasePacer", "RedisPacer", "Unpaced", "make_pacer"]
