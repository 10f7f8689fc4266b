"""Logs, request ids carried into tasks, and the metrics a scrape shows."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families

from tests.test_upstream import EXPIRED, ScriptedTransport, logged_in, make_client
from webhook_app.app import create_app
from webhook_app.depositphotos.client import AuthenticationError
from webhook_app.infra import logs
from webhook_app.infra.queue import SUBMIT_JOB, Enqueuer
from webhook_app.settings import Settings, SettingsError
from workers.observability import queue_lag


@pytest.fixture(autouse=True)
def plain_logs() -> Iterator[None]:
    yield
    logs.clear()
    logs.configure_logging(Settings())


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_json_lines_carry_the_bound_ids_and_the_event_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure_logging(Settings(log_format="json"))
    logs.bind(request_id="req-1", job_id="job-1")
    logging.getLogger("webhook_app.test").info(
        "upstream call", extra={"command": "login", "duration_ms": 12, "outcome": "success"}
    )
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "upstream call" in x]
    entry = json.loads(line)
    assert entry["message"] == "upstream call" and entry["level"] == "info"
    assert (entry["request_id"], entry["job_id"], entry["command"]) == ("req-1", "job-1", "login")
    assert (entry["duration_ms"], entry["outcome"]) == (12, "success")
    assert datetime.fromisoformat(entry["ts"]).tzinfo is not None


def test_plain_text_in_development(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure_logging(Settings())
    logs.bind(request_id="req-2")
    logging.getLogger("webhook_app.test").warning("something", extra={"outcome": "odd"})
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.endswith("WARNING webhook_app.test: something [outcome=odd request_id=req-2]")


def test_request_ids_are_echoed_or_made(client: Any) -> None:
    given = client.get("/healthz", headers={"X-Request-ID": "tool-42.abc"})
    assert given.headers["X-Request-ID"] == "tool-42.abc"
    made = client.get("/healthz").headers["X-Request-ID"]
    unusable = client.get("/healthz", headers={"X-Request-ID": "no spaces\tplease"})
    assert len(made) == 32 and made != unusable.headers["X-Request-ID"] != "no spaces\tplease"


def test_the_request_id_travels_with_the_tasks_a_request_causes(
    settings: Settings, auth: dict[str, str]
) -> None:
    broker = Celery(broker="memory://", set_as_current=False)
    app = create_app(settings, enqueuer=Enqueuer(broker))
    try:
        response = app.test_client().post(
            "/api/v1/jobs", json={"prompt": "a fox"}, headers={**auth, "X-Request-ID": "req-77"}
        )
        assert response.status_code == 202
        with broker.connection_for_read() as connection:
            queue = connection.SimpleQueue("celery")
            message = queue.get(timeout=2)
            message.ack()
            queue.close()
    finally:
        app.extensions["webhook_app"].db.dispose()
    assert message.headers["task"] == SUBMIT_JOB
    assert message.headers["request_id"] == "req-77"
    assert abs(message.headers["published_at"] - time.time()) < 60


def test_queue_lag_counts_from_publication_or_from_the_eta() -> None:
    now = time.time()
    assert queue_lag(now - 10, None, now) == pytest.approx(10)
    eta = datetime.fromtimestamp(now - 2, UTC).isoformat()
    assert queue_lag(now - 10, eta, now) == pytest.approx(2, abs=0.01)
    assert queue_lag(None, None, now) is None


def test_metrics_count_jobs_callbacks_and_upstream_calls(client: Any, auth: dict[str, str]) -> None:
    before = client.get("/metrics").get_data(as_text=True)
    client.post("/api/v1/jobs", json={"prompt": "a fox"}, headers=auth)
    client.post("/callbacks/no-such-job/bad-token", data=b"{}")
    upstream = make_client(
        ScriptedTransport(
            (200, logged_in("s1")), (200, EXPIRED), (200, logged_in("s2")), (200, EXPIRED)
        )
    )
    with pytest.raises(AuthenticationError):
        upstream.get("generation")

    after = client.get("/metrics")
    assert after.status_code == 200 and after.content_type.startswith("text/plain")
    text = after.get_data(as_text=True)
    key = (("status", "queued"),)
    assert samples(text, "webhook_app_jobs")[key] == samples(before, "webhook_app_jobs")[key] + 1
    refused = (("outcome", "refused"),)
    assert (
        samples(text, "webhook_app_callbacks_total")[refused]
        == samples(before, "webhook_app_callbacks_total").get(refused, 0) + 1
    )
    calls = samples(text, "webhook_app_upstream_calls_total")
    denied = (("command", "imageGenerator.get"), ("outcome", "authentication"))
    assert calls[denied] - samples(before, "webhook_app_upstream_calls_total").get(denied, 0) == 2
    assert (
        samples(text, "webhook_app_upstream_call_duration_seconds_count")[(("command", "login"),)]
        >= 2
    )
    assert samples(text, "webhook_app_upstream_paused")[()] == 0
    generations = samples(text, "webhook_app_generations_today")[()]
    assert generations == samples(before, "webhook_app_generations_today")[()] + 1


def test_follow_up_settings_are_read_and_checked() -> None:
    settings = Settings.from_env(
        {
            "ARCHIVE_DIR": "/data/images",
            "ARCHIVE_S3_BUCKET": "results",
            "ARCHIVE_S3_PREFIX": "/jobs/",
            "ON_JOB_DONE_TASK": "orders.images_ready",
            "ON_JOB_DONE_QUEUE": "orders",
            "WORKER_METRICS_PORT": "9100",
            "LOG_LEVEL": "debug",
        }
    )
    assert (settings.archive_dir, settings.archive_s3_bucket) == ("/data/images", "results")
    assert settings.archive_s3_prefix == "jobs"
    assert (settings.on_job_done_task, settings.on_job_done_queue) == (
        "orders.images_ready",
        "orders",
    )
    assert (settings.worker_metrics_port, settings.log_level, settings.log_format) == (
        9100,
        "DEBUG",
        "text",
    )
    production = {
        "APP_ENV": "production",
        "SECRET_KEY": "s",
        "DP_API_KEY": "k",
        "DP_LOGIN_USER": "u",
        "DP_LOGIN_PASSWORD": "p",
        "CALLBACK_SECRET": "s",
        "API_TOKENS": "t",
        "PUBLIC_BASE_URL": "https://x.example",
    }
    assert Settings.from_env(production).log_format == "json"
    for bad, name in (
        ({"ON_JOB_DONE_TASK": "orders.images_ready"}, "ON_JOB_DONE_QUEUE"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"WORKER_METRICS_PORT": "http"}, "WORKER_METRICS_PORT"),
        ({"ARCHIVE_MAX_BYTES": "0"}, "ARCHIVE_MAX_BYTES"),
    ):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env(bad)
