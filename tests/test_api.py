"""The query API through HTTP (Flask's test client) on a real database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from tests.common.doubles import RecordingEnqueuer
from tests.common.statements import round_trips
from webhook_app.infra.queue import SUBMIT_JOB
from webhook_app.models import Job, utcnow
from webhook_app.settings import Settings


def create(client: Any, auth: dict[str, str], body: Any, **headers: str) -> Any:
    return client.post("/api/v1/jobs", json=body, headers={**auth, **headers})


def test_create_returns_202_with_links_and_enqueues_one_submission(
    client: Any, auth: dict[str, str], enqueuer: RecordingEnqueuer
) -> None:
    response = create(
        client,
        auth,
        {
            "prompt": "a fox",
            "aspect_ratio": "16:9",
            "medium": "art",
            "metadata": {"team": "design"},
        },
    )
    assert response.status_code == 202
    job = response.get_json()
    assert job["status"] == "queued" and job["aspect_ratio"] == "16:9"
    assert job["metadata"] == {"team": "design"}
    assert job["links"]["self"] == f"/api/v1/jobs/{job['id']}"
    assert response.headers["Location"] == job["links"]["self"]
    assert [name for name, _ in enqueuer.sent] == [SUBMIT_JOB]


def test_creating_a_job_costs_postgresql_three_round_trips(
    app: Any, client: Any, auth: dict[str, str], enqueuer: RecordingEnqueuer
) -> None:
    """BEGIN, one statement (the budget's count, the job, its first event), COMMIT."""
    db = app.extensions["webhook_app"].db
    create(client, auth, {"prompt": "the pool's first connection"})
    with round_trips(db) as trips:
        response = create(client, auth, {"prompt": "a fox", "metadata": {"team": "design"}})
    assert response.status_code == 202
    job = response.get_json()
    assert (job["version"], job["items"], job["metadata"]) == (1, [], {"team": "design"})
    assert (
        response.headers["ETag"] == client.get(job["links"]["self"], headers=auth).headers["ETag"]
    )
    assert enqueuer.sent[-1][0] == SUBMIT_JOB
    assert not [sql for sql in trips.sent if "job_items" in sql]  # a new job has no items to read
    if db.engine.dialect.name == "postgresql":
        assert len(trips.sent) == 3, trips.sent


def test_same_idempotency_key_returns_the_same_job_and_submits_nothing_new(
    client: Any, auth: dict[str, str], enqueuer: RecordingEnqueuer
) -> None:
    key = str(uuid.uuid4())
    first = create(client, auth, {"prompt": "a fox"}, **{"Idempotency-Key": key})
    again = create(client, auth, {"prompt": "a fox"}, **{"Idempotency-Key": key})
    assert first.get_json()["id"] == again.get_json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(enqueuer.sent) == 1
    clash = create(client, auth, {"prompt": "a wolf"}, **{"Idempotency-Key": key})
    assert clash.status_code == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 401}, "prompt"),
        ({"prompt": "x", "aspect_ratio": "7:5"}, "aspect_ratio"),
        ({"prompt": "x", "medium": "oil"}, "medium"),
        ({"prompt": "x", "metadata": [1, 2]}, "metadata"),
        ({"prompt": "x", "colour": "red"}, "colour"),
        (["prompt"], "body"),
    ],
)
def test_bad_requests_name_the_field_and_create_nothing(
    client: Any, auth: dict[str, str], enqueuer: RecordingEnqueuer, body: Any, field: str
) -> None:
    before = len(client.get("/api/v1/jobs?limit=200", headers=auth).get_json()["jobs"])
    response = create(client, auth, body)
    assert response.status_code in (400, 422)
    assert response.get_json()["error"]["field"] == field
    assert enqueuer.sent == []
    assert len(client.get("/api/v1/jobs?limit=200", headers=auth).get_json()["jobs"]) == before


def test_prompt_of_exactly_400_characters_is_accepted(client: Any, auth: dict[str, str]) -> None:
    assert create(client, auth, {"prompt": "x" * 400}).status_code == 202


def test_non_json_body_is_a_400(client: Any, auth: dict[str, str]) -> None:
    response = client.post("/api/v1/jobs", data="prompt=x", headers=auth)
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == "body"


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic dGVzdA==", "Bearer "])
def test_api_needs_a_valid_bearer_token(client: Any, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = client.get("/api/v1/jobs", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert client.post("/api/v1/jobs", json={"prompt": "x"}, headers=headers).status_code == 401


def test_health_needs_no_token(client: Any) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"]["database"] == "ok"
    assert ready.get_json()["checks"]["upstream"] == "ok"


def test_list_is_newest_first_and_the_cursor_is_stable_while_jobs_arrive(
    client: Any, auth: dict[str, str]
) -> None:
    since = datetime.now(UTC).isoformat()
    made = [create(client, auth, {"prompt": f"p{n}"}).get_json()["id"] for n in range(5)]
    query = {"limit": 2, "created_after": since}
    page = client.get("/api/v1/jobs", query_string=query, headers=auth).get_json()
    assert [j["id"] for j in page["jobs"]] == made[::-1][:2]
    create(client, auth, {"prompt": "newer"})
    seen = [j["id"] for j in page["jobs"]]
    cursor = page["next_cursor"]
    while cursor:
        query["cursor"] = cursor
        page = client.get("/api/v1/jobs", query_string=query, headers=auth).get_json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
    assert seen == made[::-1]


def test_list_filters_by_status(client: Any, auth: dict[str, str]) -> None:
    # Only this test's jobs: others share the database and complete some of theirs.
    since = datetime.now(UTC).isoformat()
    create(client, auth, {"prompt": "queued one"})

    def listed(status: str) -> list[dict[str, Any]]:
        query = {"status": status, "created_after": since}
        return list(client.get("/api/v1/jobs", query_string=query, headers=auth).get_json()["jobs"])

    queued = listed("queued")
    assert queued and all(j["status"] == "queued" for j in queued)
    assert listed("completed") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=done", "status"),
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("limit=1000", "limit"),
        ("created_after=yesterday", "created_after"),
        ("cursor=bm90LWEtY3Vyc29y", "cursor"),
    ],
)
def test_bad_list_parameters_are_400(
    client: Any, auth: dict[str, str], query: str, field: str
) -> None:
    response = client.get(f"/api/v1/jobs?{query}", headers=auth)
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == field


def test_unknown_job_is_404(client: Any, auth: dict[str, str]) -> None:
    for path in ("", "/events", "/deliveries"):
        response = client.get(f"/api/v1/jobs/{uuid.uuid4()}{path}", headers=auth)
        assert response.status_code == 404


def test_events_tell_the_story_from_creation(client: Any, auth: dict[str, str]) -> None:
    job = create(client, auth, {"prompt": "story"}).get_json()
    events = client.get(f"/api/v1/jobs/{job['id']}/events", headers=auth).get_json()["events"]
    assert [(e["from"], e["to"], e["source"]) for e in events] == [(None, "queued", "api")]


def test_refresh_before_submission_is_409(client: Any, auth: dict[str, str]) -> None:
    job = create(client, auth, {"prompt": "not yet"}).get_json()
    response = client.post(f"/api/v1/jobs/{job['id']}/refresh", headers=auth)
    assert response.status_code == 409


class RefusingEnqueuer(RecordingEnqueuer):
    """A broker that cannot be reached."""

    def send(self, name: str, *args: Any) -> bool:
        super().send(name, *args)
        return False


def test_a_job_whose_submission_could_not_be_enqueued_says_so(
    settings: Settings, auth: dict[str, str]
) -> None:
    from webhook_app.app import create_app
    from webhook_app.services import submission

    app = create_app(settings, enqueuer=RefusingEnqueuer())
    client = app.test_client()
    created = client.post("/api/v1/jobs", json={"prompt": "no broker"}, headers=auth)
    assert created.status_code == 202  # it is stored: reconciliation enqueues it later
    job = client.get(f"/api/v1/jobs/{created.get_json()['id']}", headers=auth).get_json()
    assert job["status"] == "queued"
    assert job["last_error"]["kind"] == "not_enqueued"
    # Once a worker claims it, the warning has served its purpose.
    db = app.extensions["webhook_app"].db
    with db.transaction() as session:
        job_id = session.scalar(select(Job.id).where(Job.public_id == job["id"]))
        assert submission.claim(session, job_id, now=utcnow()) is not None
    again = client.get(f"/api/v1/jobs/{job['id']}", headers=auth).get_json()
    assert again["status"] == "submitting" and again["last_error"] is None
    db.dispose()
