"""The query API's text filter, counts, long-poll wait and hostile parameters, on a real
database (SQLite and PostgreSQL) through Flask's test client."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from typing import Any

import pytest

from tests.common.doubles import TEST_SECRET
from tests.common.factories import envelope, generation
from webhook_app.app import create_app
from webhook_app.infra.callback_tokens import callback_token
from webhook_app.services import jobs
from webhook_app.settings import Settings
from webhook_app.web import waiting


def create(client: Any, auth: dict[str, str], prompt: str) -> dict[str, Any]:
    response = client.post("/api/v1/jobs", json={"prompt": prompt}, headers=auth)
    assert response.status_code == 202, response.get_json()
    return dict(response.get_json())


def complete(client: Any, job_id: str) -> None:
    """Deliver the upstream's final callback, as the sandbox would."""
    url = f"/callbacks/{job_id}/{callback_token(TEST_SECRET, job_id)}"
    final = envelope(generation("final"))
    assert client.post(url, data=final, content_type="application/json").status_code == 200


def test_text_filter_is_case_insensitive_literal_and_paginates(
    client: Any, auth: dict[str, str]
) -> None:
    tag = uuid.uuid4().hex[:8]
    made = [create(client, auth, f"{tag} Lighthouse {n}")["id"] for n in range(3)]
    create(client, auth, f"{tag} harbour")
    create(client, auth, f"{tag} 100% lighthouse_x")
    seen, cursor = [], None
    while True:
        query = {"q": f"{tag} LIGHTHOUSE ", "limit": 2, "cursor": cursor}
        page = client.get("/api/v1/jobs", query_string=query, headers=auth).get_json()
        seen += [job["id"] for job in page["jobs"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == made[::-1]
    # % and _ are matched as themselves, not as wildcards
    literal = client.get("/api/v1/jobs", query_string={"q": "100% l"}, headers=auth).get_json()
    assert [job["prompt"] for job in literal["jobs"]] == [f"{tag} 100% lighthouse_x"]
    too_long = client.get("/api/v1/jobs", query_string={"q": "x" * 201}, headers=auth)
    assert too_long.status_code == 400 and too_long.get_json()["error"]["field"] == "q"


def test_stats_count_every_status(client: Any, auth: dict[str, str]) -> None:
    tag = uuid.uuid4().hex[:8]
    done = create(client, auth, f"{tag} one")
    create(client, auth, f"{tag} two")
    complete(client, done["id"])
    stats = client.get("/api/v1/stats", query_string={"q": tag}, headers=auth).get_json()
    assert stats["total"] == 2
    assert stats["jobs"] == {
        "queued": 1,
        "submitting": 0,
        "submitted": 0,
        "processing": 0,
        "timed_out": 0,
        "completed": 1,
        "failed": 0,
    }
    assert client.get("/api/v1/stats").status_code == 401


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"created_after": ""}, "created_after"),
        ({"created_after": "2026-01-01"}, "created_after"),
        ({"created_after": "9999-12-31T23:59:59-23:59"}, "created_after"),
        ({"created_after": "\uff12\uff10\uff12\uff16-01-01T00:00:00"}, "created_after"),
        ({"status": ""}, "status"),
        ({"q": "a\x00b"}, "q"),
    ],
)
def test_malformed_filters_are_400(
    client: Any, auth: dict[str, str], query: dict[str, str], field: str
) -> None:
    for path in ("/api/v1/jobs", "/api/v1/stats"):
        if field == "status" and path.endswith("stats"):
            continue
        response = client.get(path, query_string=query, headers=auth)
        assert response.status_code == 400, (path, response.get_json())
        assert response.get_json()["error"]["field"] == field


def test_created_after_accepts_an_offset_sent_unescaped(client: Any, auth: dict[str, str]) -> None:
    response = client.get("/api/v1/jobs?created_after=2020-01-01T00:00:00 02:00", headers=auth)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "a\x00b"}, "prompt"),
        ({"prompt": "ok", "metadata": {"k": ["a\x00"]}}, "metadata"),
        ({"prompt": "ok", "metadata": {"k\x00": 1}}, "metadata"),
    ],
)
def test_nul_characters_in_a_request_are_refused(
    client: Any, auth: dict[str, str], body: dict[str, Any], field: str
) -> None:
    # PostgreSQL cannot store them: without the check this was a database error (503).
    response = client.post("/api/v1/jobs", json=body, headers=auth)
    assert response.status_code == 422 and response.get_json()["error"]["field"] == field


def test_nul_characters_in_a_key_or_an_id_are_refused(client: Any, auth: dict[str, str]) -> None:
    headers = {**auth, "Idempotency-Key": "a\x00"}
    assert client.post("/api/v1/jobs", json={"prompt": "ok"}, headers=headers).status_code == 400
    for path in ("/api/v1/jobs/a%00b", "/api/v1/jobs/a%00b/events", "/api/v1/jobs/a%00b?wait=1"):
        assert client.get(path, headers=auth).status_code == 404


@pytest.mark.parametrize("wait", ["-1", "nan", "inf", "soon"])
def test_bad_wait_is_400(client: Any, auth: dict[str, str], wait: str) -> None:
    job = create(client, auth, "wait")
    response = client.get(f"/api/v1/jobs/{job['id']}", query_string={"wait": wait}, headers=auth)
    assert response.status_code == 400 and response.get_json()["error"]["field"] == "wait"


def test_a_wait_over_the_cap_is_held_only_as_long_as_the_cap(
    settings: Settings, enqueuer: Any, auth: dict[str, str]
) -> None:
    app = create_app(dataclasses.replace(settings, max_wait=1.0), enqueuer=enqueuer)
    client = app.test_client()
    job = create(client, auth, "held at most a second")
    started = time.monotonic()
    response = client.get(f"/api/v1/jobs/{job['id']}?wait=300", headers=auth)
    elapsed = time.monotonic() - started
    app.extensions["webhook_app"].db.dispose()
    assert response.status_code == 200 and response.get_json()["status"] == "queued"
    assert response.headers["X-Max-Wait"] == "1"
    assert 1.0 <= elapsed < 20


def test_wait_returns_as_soon_as_the_job_is_terminal(
    app: Any, client: Any, auth: dict[str, str]
) -> None:
    job = create(client, auth, "a slow lighthouse")
    timer = threading.Timer(0.6, complete, args=(app.test_client(), job["id"]))
    started = time.monotonic()
    timer.start()
    try:
        response = client.get(f"/api/v1/jobs/{job['id']}?wait=20", headers=auth)
    finally:
        timer.join()
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.get_json()["status"] == "completed"
    assert 0.5 < elapsed < 15


def test_wait_answers_the_unfinished_job_when_time_runs_out(
    client: Any, auth: dict[str, str]
) -> None:
    job = create(client, auth, "never finishes")
    started = time.monotonic()
    response = client.get(f"/api/v1/jobs/{job['id']}?wait=0.5", headers=auth)
    assert time.monotonic() - started >= 0.5
    assert response.status_code == 200 and response.get_json()["status"] == "queued"
    missing = client.get(f"/api/v1/jobs/{uuid.uuid4()}?wait=30", headers=auth)
    assert missing.status_code == 404


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_waiting_reads_less_often_as_it_goes_and_stops_at_the_deadline(
    app: Any, client: Any, auth: dict[str, str]
) -> None:
    job = create(client, auth, "clocked")
    clock = FakeClock()
    db = app.extensions["webhook_app"].db
    waited = waiting.wait_until_settled(
        db, waiting.Waiters(1), job["id"], 10, clock=clock, sleep=clock.sleep
    )
    assert waited and clock.now == pytest.approx(10)
    assert clock.sleeps[0] == waiting.FIRST_CHECK_AFTER
    assert max(clock.sleeps) == waiting.LONGEST_CHECK_INTERVAL
    assert clock.sleeps == sorted(clock.sleeps[:-1]) + clock.sleeps[-1:]


def test_waiters_beyond_the_cap_are_answered_at_once(
    app: Any, client: Any, auth: dict[str, str]
) -> None:
    job = create(client, auth, "crowded")
    db = app.extensions["webhook_app"].db
    waiters = waiting.Waiters(1)
    clock = FakeClock()
    with waiters.slot() as first:
        assert first
        assert not waiting.wait_until_settled(
            db, waiters, job["id"], 10, clock=clock, sleep=clock.sleep
        )
        assert clock.sleeps == []
    assert waiting.wait_until_settled(db, waiters, job["id"], 1, clock=clock, sleep=clock.sleep)


def test_status_of_reads_one_column(session: Any) -> None:
    from tests.common.factories import make_job

    job = make_job(session, "status only")
    assert jobs.status_of(session, job.public_id) == "queued"
    assert jobs.status_of(session, "missing") is None
