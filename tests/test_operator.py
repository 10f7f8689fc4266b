"""Operator actions through HTTP: refresh, retry, cancel."""

from __future__ import annotations

from typing import Any

from tests.common.doubles import RecordingEnqueuer
from tests.common.factories import envelope, generation
from tests.test_receiver import post
from webhook_app.infra.queue import REFRESH_JOB, SUBMIT_JOB


def create(client: Any, auth: dict[str, str], prompt: str = "an owl") -> dict[str, Any]:
    return dict(client.post("/api/v1/jobs", json={"prompt": prompt}, headers=auth).get_json())


def act(client: Any, auth: dict[str, str], job_id: str, action: str, **body: Any) -> Any:
    return client.post(f"/api/v1/jobs/{job_id}/{action}", json=body or None, headers=auth)


def events(client: Any, auth: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    return list(client.get(f"/api/v1/jobs/{job_id}/events", headers=auth).get_json()["events"])


def test_cancel_a_queued_job_fails_it_with_the_reason(client: Any, auth: dict[str, str]) -> None:
    job = create(client, auth)
    response = act(client, auth, job["id"], "cancel", reason="wrong prompt")
    assert response.status_code == 202
    cancelled = response.get_json()
    assert cancelled["status"] == "failed"
    assert cancelled["last_error"]["kind"] == "cancelled"
    assert cancelled["last_error"]["message"] == "wrong prompt"
    assert events(client, auth, job["id"])[-1]["source"] == "operator"
    again = act(client, auth, job["id"], "cancel")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "not_allowed"


def test_a_submitted_job_cannot_be_cancelled(client: Any, auth: dict[str, str]) -> None:
    job = create(client, auth)
    post(client, job["id"], envelope(generation("preview")))
    response = act(client, auth, job["id"], "cancel")
    assert response.status_code == 409
    assert client.get(f"/api/v1/jobs/{job['id']}", headers=auth).get_json()["status"] == (
        "processing"
    )


def test_retry_makes_a_new_linked_job_and_submits_it_once(
    client: Any, auth: dict[str, str], enqueuer: RecordingEnqueuer
) -> None:
    job = create(client, auth, "a heron")
    assert act(client, auth, job["id"], "retry").status_code == 409  # still queued
    act(client, auth, job["id"], "cancel")
    sent_before = len(enqueuer.sent)
    response = act(client, auth, job["id"], "retry")
    assert response.status_code == 202
    new = response.get_json()
    assert new["id"] != job["id"] and new["retry_of"] == job["id"]
    assert new["prompt"] == "a heron" and new["status"] == "queued"
    read = client.get(f"/api/v1/jobs/{new['id']}", headers=auth).get_json()
    listed = client.get("/api/v1/jobs", headers=auth).get_json()["jobs"]
    assert read["retry_of"] == job["id"] and read == listed[0]  # the link is read back too
    assert [name for name, _ in enqueuer.sent[sent_before:]] == [SUBMIT_JOB]
    note = events(client, auth, job["id"])[-1]
    assert note["source"] == "operator" and note["detail"]["retried_as"] == new["id"]
    assert [(e["to"], e["source"]) for e in events(client, auth, new["id"])] == [
        ("queued", "operator")
    ]


def test_refresh_queues_a_poll_recorded_as_operator(
    client: Any, auth: dict[str, str], enqueuer: RecordingEnqueuer
) -> None:
    job = create(client, auth)
    post(client, job["id"], envelope(generation("preview")))
    response = act(client, auth, job["id"], "refresh")
    assert response.status_code == 202
    name, args = enqueuer.sent[-1]
    assert name == REFRESH_JOB and args[1] == "operator"
    assert events(client, auth, job["id"])[-1]["detail"] == {"action": "refresh"}


def test_actions_on_an_unknown_job_are_404(client: Any, auth: dict[str, str]) -> None:
    for action in ("refresh", "retry", "cancel"):
        response = act(client, auth, "00000000-0000-0000-0000-000000000000", action)
        assert response.status_code == 404
