"""The callback receiver and the applying of what it stores, through HTTP (Flask's test
client) on a real database. The `client` fixture applies what each callback stored before it
returns, as a worker's applier would; `raw` leaves it pending."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.common.doubles import TEST_SECRET, RecordingEnqueuer
from tests.common.factories import envelope, generation
from webhook_app.infra.callback_tokens import callback_token
from webhook_app.infra.queue import ENRICH_JOB, FOLLOW_UP, JOB_FINISHED, REFRESH_JOB


@pytest.fixture
def job(client: Any, auth: dict[str, str]) -> dict[str, Any]:
    response = client.post("/api/v1/jobs", json={"prompt": "a red kite"}, headers=auth)
    assert response.status_code == 202
    return dict(response.get_json())


def url(job_id: str, secret: str = TEST_SECRET) -> str:
    return f"/callbacks/{job_id}/{callback_token(secret, job_id)}"


def post(client: Any, job_id: str, body: bytes, content_type: str = "application/json") -> Any:
    return client.post(url(job_id), data=body, content_type=content_type)


def current(client: Any, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    return dict(client.get(f"/api/v1/jobs/{job_id}", headers=auth).get_json())


def deliveries(client: Any, auth: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    answer = client.get(f"/api/v1/jobs/{job_id}/deliveries", headers=auth).get_json()
    return list(answer["deliveries"])


def test_preview_then_final_completes_the_job(
    client: Any, auth: dict[str, str], job: dict[str, Any], enqueuer: RecordingEnqueuer
) -> None:
    items = ["i1-" + job["id"], "i2-" + job["id"], "i3-" + job["id"], "i4-" + job["id"]]
    preview = generation("preview", items=items)
    assert post(client, job["id"], envelope(preview)).status_code == 200
    assert current(client, auth, job["id"])["status"] == "processing"
    response = post(client, job["id"], envelope(generation("final", preview["uuid"], items)))
    assert response.status_code == 200
    assert response.get_json() == {"received": True, "duplicate": False}
    state = current(client, auth, job["id"])
    assert state["status"] == "completed"
    assert [i["dp_item_id"] for i in state["items"]] == [900000, 900001, 900002, 900003]
    assert all(i["preview_url"] for i in state["items"])
    # The finished job's hook and its media data, asked for in one message that carries what
    # they would otherwise read: the job's duration, its items.
    name, parts = enqueuer.sent[-1]
    job_key, _, seconds = parts[0][1][0]
    assert isinstance(seconds, float) and seconds >= 0
    assert (name, parts) == (
        FOLLOW_UP,
        (
            (JOB_FINISHED, ((job_key, "completed", seconds),)),
            (ENRICH_JOB, ((job_key, tuple(items)),)),
        ),
    )
    assert [d["outcome"] for d in deliveries(client, auth, job["id"])] == ["applied", "applied"]


def test_wrong_token_and_unknown_job_get_the_same_404(client: Any, job: dict[str, Any]) -> None:
    body = envelope(generation("preview"))
    wrong = client.post(f"/callbacks/{job['id']}/{'A' * 32}", data=body)
    other_secret = client.post(url(job["id"], "another-secret"), data=body)
    unknown_id = "00000000-0000-0000-0000-000000000000"
    unknown = client.post(url(unknown_id), data=body)
    garbage_id = client.post(url("../../etc"), data=body)
    answers = {(r.status_code, r.get_data()) for r in (wrong, other_secret, unknown)}
    assert len(answers) == 1 and wrong.status_code == 404
    assert garbage_id.status_code == 404


def test_forms_and_bare_bodies_are_understood(
    client: Any, auth: dict[str, str], job: dict[str, Any]
) -> None:
    form = (
        "type=success&data[uuid]=g-form&data[status]=processing&data[purchaseStatus]=deferred"
        f"&data[items][0][uuid]=f1-{job['id']}&data[items][0][dpItemId]="
        f"&data[items][0][previewUrl]=https%3A%2F%2Fexample.test%2Fp.png"
    )
    response = post(client, job["id"], form.encode(), "application/x-www-form-urlencoded")
    assert response.status_code == 200, response.get_json()
    state = current(client, auth, job["id"])
    assert state["status"] == "processing"
    assert state["items"][0]["preview_url"] == "https://example.test/p.png"
    bare = generation("final", "g-form", [f"f1-{job['id']}"])
    assert post(client, job["id"], json.dumps(bare).encode()).status_code == 200
    assert current(client, auth, job["id"])["status"] == "completed"


def test_unparseable_body_is_kept_leaves_job_and_queues_a_confirmation(
    client: Any, auth: dict[str, str], job: dict[str, Any], enqueuer: RecordingEnqueuer
) -> None:
    before = current(client, auth, job["id"])
    response = post(client, job["id"], b'{"type": "success", "data": ', "application/json")
    assert response.status_code == 200 and response.get_json()["received"] is True
    after = current(client, auth, job["id"])
    assert after["status"] == before["status"] and after["items"] == before["items"]
    (kept,) = deliveries(client, auth, job["id"])
    assert kept["body"] == '{"type": "success", "data": '
    assert kept["outcome"] == "unparseable" and kept["detail"] and kept["applied_at"]
    assert enqueuer.sent[-1][0] == REFRESH_JOB


def test_duplicates_are_counted_once_and_change_nothing(
    client: Any, auth: dict[str, str], job: dict[str, Any], enqueuer: RecordingEnqueuer
) -> None:
    body = envelope(generation("preview"))
    first = post(client, job["id"], body).get_json()
    sent_before = len(enqueuer.sent)
    second = post(client, job["id"], body).get_json()
    assert (first["duplicate"], second["duplicate"]) == (False, True)
    assert len(enqueuer.sent) == sent_before
    assert [d["received_count"] for d in deliveries(client, auth, job["id"])] == [2]
    events = client.get(f"/api/v1/jobs/{job['id']}/events", headers=auth).get_json()["events"]
    assert [e["to"] for e in events] == ["queued", "processing"]
    # The batch writes the event's detail as the object it is, on either database.
    assert events[-1]["detail"] == {"upstream_status": "processing"}


def test_other_generation_is_kept_as_a_mismatch_and_moves_nothing(
    client: Any, auth: dict[str, str], job: dict[str, Any]
) -> None:
    post(client, job["id"], envelope(generation("preview")))
    response = post(client, job["id"], envelope(generation("final")))
    assert response.status_code == 200
    assert current(client, auth, job["id"])["status"] == "processing"
    outcomes = [d["outcome"] for d in deliveries(client, auth, job["id"])]
    assert outcomes == ["applied", "mismatch"]


def test_oversized_body_gets_413(client: Any, job: dict[str, Any]) -> None:
    response = post(client, job["id"], b"{" + b" " * (1024 * 1024) + b"}")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "request_entity_too_large"


def test_failure_envelope_is_kept_and_confirmed(
    client: Any, auth: dict[str, str], job: dict[str, Any], enqueuer: RecordingEnqueuer
) -> None:
    body = json.dumps({"type": "failure", "error": {"errorcode": 500, "errormsg": "boom"}})
    response = post(client, job["id"], body.encode())
    assert response.status_code == 200
    assert current(client, auth, job["id"])["status"] == "queued"
    assert [d["outcome"] for d in deliveries(client, auth, job["id"])] == ["upstream_failure"]
    assert enqueuer.sent[-1][0] == REFRESH_JOB


def test_the_receivers_answers_carry_the_apps_headers_and_request_id(
    client: Any, auth: dict[str, str], job: dict[str, Any]
) -> None:
    api = client.get(f"/api/v1/jobs/{job['id']}/deliveries", headers=auth)
    given = {"X-Request-ID": "sender-7.a"}
    stored = client.post(url(job["id"]), data=envelope(generation("preview")), headers=given)
    refused = client.post(f"/callbacks/{job['id']}/{'A' * 32}", data=b"{}")
    for answer in (stored, refused):
        for name in ("X-Content-Type-Options", "X-Frame-Options", "Content-Security-Policy"):
            assert answer.headers[name] == api.headers[name], name
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["Content-Type"] == "application/json"
    assert stored.headers["X-Request-ID"] == "sender-7.a"
    assert len(refused.headers["X-Request-ID"]) == 32


def test_a_callback_url_takes_only_posts(client: Any, job: dict[str, Any]) -> None:
    for method in ("get", "put", "delete"):
        answer = getattr(client, method)(url(job["id"]))
        assert answer.status_code == 405, method
        assert answer.get_json()["error"]["code"] == "method_not_allowed"
        assert answer.headers["Allow"] == "POST"
