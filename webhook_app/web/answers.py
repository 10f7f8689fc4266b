"""Job answers kept serialized, per web process, by the job's version.

A job's version changes in the same transaction as anything its answer shows (its row, its
items, their archives: `webhook_app.changes`), so an answer kept under (public id, version) is
never stale: once the job changes, the entry is merely unused, and a newer one takes its place.
Get-one then costs a version lookup when the job has not changed since this process last
served it, and the full read and serialization only when it has.
"""

from __future__ import annotations

import threading


class AnswerCache:
    """At most `size` answers; the oldest kept goes first when it is full (0 keeps none)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._answers: dict[str, tuple[int, bytes]] = {}
        self._lock = threading.Lock()

    def __contains__(self, public_id: str) -> bool:
        return public_id in self._answers

    def get(self, public_id: str, version: int) -> bytes | None:
        kept = self._answers.get(public_id)
        return kept[1] if kept is not None and kept[0] == version else None

    def put(self, public_id: str, version: int, body: bytes) -> None:
        if not self.size:
            return
        with self._lock:
            kept = self._answers.pop(public_id, None)
            if kept is not None and kept[0] > version:  # a newer one was kept meanwhile
                self._answers[public_id] = kept
                return
            while len(self._answers) >= self.size:
                del self._answers[next(iter(self._answers))]
            self._answers[public_id] = (version, body)
