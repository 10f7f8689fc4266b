"""The server-less broker (kombu's SQLAlchemy transport over SQLite), as our processes use it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from kombu import Connection
from sqlalchemy import event

from webhook_app.infra import broker


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


def test_a_broker_file_in_a_folder_that_does_not_exist_yet_works(tmp_path: Path) -> None:
    from webhook_app.infra.queue import make_celery
    from webhook_app.settings import Settings

    url = f"sqla+sqlite:///{tmp_path}/fresh/var/celery-broker.sqlite3"
    app = make_celery(Settings(broker_url=url))
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1)
        connection.default_channel._put("celery", {"body": "hello"})
    assert (tmp_path / "fresh" / "var" / "celery-broker.sqlite3").is_file()


def test_tls_brokers_get_the_certificate_checking_settings_ask_for(tmp_path: Path) -> None:
    import ssl

    from webhook_app.infra.queue import broker_tls, describe_broker, make_celery
    from webhook_app.settings import Settings

    rediss = Settings(broker_url="rediss://:s3cret@redis.internal:6380/0")
    assert make_celery(rediss).conf.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_NONE}
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    checked = Settings(
        broker_url="amqps://u:s3cret@mq.internal/jobs",
        broker_tls_verify=True,
        broker_tls_ca_certs=str(ca),
    )
    assert broker_tls(checked) == {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": str(ca)}
    assert broker_tls(Settings(broker_url="redis://127.0.0.1:6379/0")) is None
    # What /readyz shows: where and how, never who or with what password.
    assert (
        describe_broker(rediss) == "rediss://redis.internal:6380/0 (TLS, certificate not verified)"
    )
    assert describe_broker(checked) == "amqps://mq.internal/jobs (TLS, certificate verified)"
    assert "s3cret" not in describe_broker(rediss) + describe_broker(checked)
