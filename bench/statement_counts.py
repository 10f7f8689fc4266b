"""Counting database round trips per process, for the benchmark kit.

With DB_STATEMENT_COUNTS naming a directory, a process the kit starts counts its statements
and its transactions (`hooks/sitecustomize.py` installs the counting at start-up, so the
service itself knows nothing of it), and each process writes the totals to
`<directory>/<pid>.json` several times a second. Statements are counted by the driver's
cursors, so that those run without SQLAlchemy's execution (the receiver's) count too;
transactions by every engine.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import Engine

VARIABLE = "DB_STATEMENT_COUNTS"
FLUSH_EVERY = 0.2

_lock = threading.Lock()
_counts: dict[str, int] = {}
_owner: int | None = None  # the pid the counts belong to: a forked child starts afresh


def install_from_env() -> None:
    directory = os.environ.get(VARIABLE)
    if directory:
        install(Path(directory))


def install(directory: Path) -> None:
    """Count what every engine sends; the totals of the process go to a file in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)

    def count(name: str) -> None:
        global _owner
        with _lock:
            if _owner != os.getpid():
                _owner = os.getpid()
                _counts.clear()
                threading.Thread(target=_flush_forever, args=(directory,), daemon=True).start()
            _counts[name] = _counts.get(name, 0) + 1

    def counted(method: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            count("statements")
            return method(*args, **kwargs)

        return run

    def on_commit(connection: Any) -> None:
        if not _autocommit(connection):
            count("commits")

    def on_rollback(connection: Any) -> None:
        if not _autocommit(connection):
            count("rollbacks")

    # On the classes: every connection and engine of the process, made before or after.
    psycopg.Cursor.execute = counted(psycopg.Cursor.execute)  # type: ignore[method-assign]
    psycopg.Cursor.executemany = counted(psycopg.Cursor.executemany)  # type: ignore[method-assign]
    event.listen(Engine, "commit", on_commit)
    event.listen(Engine, "rollback", on_rollback)


def _autocommit(connection: Any) -> bool:
    # Such a connection sends no BEGIN, COMMIT or ROLLBACK: its transactions cost nothing.
    # AUTOCOMMIT may be the connection's option or its engine's: SQLAlchemy's test covers both.
    return bool(connection._is_autocommit_isolation())


def _flush_forever(directory: Path) -> None:
    pid = os.getpid()
    written: dict[str, int] = {}
    while _owner == pid:
        with _lock:
            snapshot = dict(_counts)
        if snapshot != written:
            temporary = directory / f".{pid}.tmp"
            temporary.write_text(json.dumps(snapshot))
            temporary.replace(directory / f"{pid}.json")
            written = snapshot
        time.sleep(FLUSH_EVERY)


def read_totals(directory: Path) -> dict[str, int]:
    """The sum over every process that wrote to `directory` or below it."""
    totals: dict[str, int] = {}
    for path in directory.rglob("*.json"):
        try:
            counts = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for name, value in counts.items():
            totals[name] = totals.get(name, 0) + int(value)
    return totals
