"""Refused attempts: counted and logged with their source, never stored in the database.

The counts are per process, by reason, for a metrics endpoint to export. Logging is throttled
so that a flood costs a few lines per window rather than one line per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address

log = logging.getLogger(__name__)

# Reasons, as the metric's label values.
CALLBACK_NOT_FOUND = "callback_not_found"  # wrong token, unknown job or malformed URL
CALLBACK_SOURCE = "callback_source"  # outside CALLBACK_ALLOWED_NETWORKS
API_UNAUTHENTICATED = "api_unauthenticated"  # no or unknown bearer token
API_SCOPE = "api_scope"  # a read-only token asked to write


class Refusals:
    """Counts refusals by reason and logs at most `lines` of them per `window` seconds."""

    def __init__(
        self, *, window: float = 10.0, lines: int = 20, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._window = window
        self._lines = lines
        self._clock = clock
        self._window_start = float("-inf")
        self._logged = 0
        self._unlogged = 0

    def refuse(self, reason: str, source: str | None) -> None:
        """Count one refused attempt, and log it with its source address unless throttled."""
        with self._lock:
            self._counts[reason] += 1
            now = self._clock()
            if now - self._window_start >= self._window:
                self._window_start, self._logged = now, 0
            if self._logged >= self._lines:
                self._unlogged += 1
                return
            self._logged += 1
            unlogged, self._unlogged = self._unlogged, 0
        suffix = f" ({unlogged} more refused without a log line)" if unlogged else ""
        log.warning("refused %s from %s%s", reason, source or "unknown address", suffix)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


refusals = Refusals()


def refuse(reason: str, source: str | None) -> None:
    refusals.refuse(reason, source)


def refusal_counts() -> dict[str, int]:
    """Refused attempts in this process since it started, by reason."""
    return refusals.counts()


def source_allowed(address: str | None, networks: Iterable[IPv4Network | IPv6Network]) -> bool:
    """True when no networks are configured or the address is inside one of them."""
    networks = tuple(networks)
    if not networks:
        return True
    try:
        ip = ip_address(address or "")
    except ValueError:
        return False
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)
