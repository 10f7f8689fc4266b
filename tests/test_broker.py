"""The server-less broker (kombu's SQLAlchemy transport over SQLite), as our processes use it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from kombu import Connection
from sqlalchemy import event

from webhook_app import broker


def test_a_queue_another_process_created_first_is_used_not_fatal(tmp_path: Path) -> None:
    broker.use_fast_polling()
    path = tmp_path / "broker.sqlite3"
    with Connection(f"sqla+sqlite:///{path}") as connection:
        channel = connection.default_channel
        assert isinstance(channel, broker.Channel)
        engine = channel.session.get_bind()
        channel._get_or_create("warm-up")  # the tables exist from here on

        def another_process_first(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
            # Web, worker and beat start together: one of them inserts the row just before us.
            if statement.startswith("INSERT INTO kombu_queue"):
                with sqlite3.connect(path) as other:
                    other.execute("INSERT INTO kombu_queue (name) VALUES ('celery-jobs')")

        event.listen(engine, "before_cursor_execute", another_process_first)
        try:
            queue = channel._get_or_create("celery-jobs")
        finally:
            event.remove(engine, "before_cursor_execute", another_process_first)
        assert queue.name == "celery-jobs"
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT count(*) FROM kombu_queue WHERE name = 'celery-jobs'")
            assert rows.fetchone() == (1,)
        # And the queue works: a message put is a message got.
        channel._put("celery-jobs", {"body": "hello"})
        assert channel._get("celery-jobs") == {"body": "hello"}
