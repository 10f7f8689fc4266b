"""Who may call back: tokens, rotation, source networks; what a refusal costs and leaves."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable, Iterator
from ipaddress import ip_network
from typing import Any

import pytest

from tests.common.doubles import TEST_SECRET, ApplyingClient, RecordingEnqueuer
from tests.common.factories import envelope, generation
from tests.common.statements import recorded_statements
from webhook_app.app import create_app
from webhook_app.infra.callback_tokens import callback_token
from webhook_app.infra.refusals import refusal_counts
from webhook_app.settings import Settings

NEW_SECRET = "the-new-callback-secret"


@pytest.fixture
def make_client(settings: Settings, enqueuer: RecordingEnqueuer) -> Iterator[Callable[..., Any]]:
    """A test client for an app whose settings differ from the default ones."""
    apps = []

    def make(**changes: Any) -> Any:
        app = create_app(dataclasses.replace(settings, **changes), enqueuer=enqueuer)
        apps.append(app)
        app.test_client_class = ApplyingClient
        return app.test_client()

    yield make
    for app in apps:
        app.extensions["webhook_app"].db.dispose()


def new_job(client: Any, auth: dict[str, str]) -> str:
    response = client.post("/api/v1/jobs", json={"prompt": "a red kite"}, headers=auth)
    assert response.status_code == 202
    return str(response.get_json()["id"])


def job_state(client: Any, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    return dict(client.get(f"/api/v1/jobs/{job_id}", headers=auth).get_json())


def deliveries(client: Any, auth: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    path = f"/api/v1/jobs/{job_id}/deliveries"
    return list(client.get(path, headers=auth).get_json()["deliveries"])


def signed(job_id: str, secret: str = TEST_SECRET) -> str:
    return f"/callbacks/{job_id}/{callback_token(secret, job_id)}"


@pytest.fixture
def statements(app: Any) -> Iterator[list[str]]:
    """Every SQL statement the app runs while the test holds this list."""
    with recorded_statements(app.extensions["webhook_app"].db) as seen:
        yield seen


def test_every_kind_of_wrong_callback_gets_the_same_404_without_touching_the_database(
    client: Any, auth: dict[str, str], statements: list[str]
) -> None:
    job_id, other_id = new_job(client, auth), new_job(client, auth)
    body = envelope(generation("preview"))
    before = deliveries(client, auth, job_id)
    refused_before = refusal_counts().get("callback_not_found", 0)
    statements.clear()
    attempts = {
        "wrong token": f"/callbacks/{job_id}/{'A' * 32}",
        "another job's token": f"/callbacks/{job_id}/{callback_token(TEST_SECRET, other_id)}",
        "a token under another secret": signed(job_id, "someone-elses-secret"),
        "an empty token": f"/callbacks/{job_id}/%20",
        "a malformed id": signed("not-a-job-id"),
        "a NUL in the id": f"/callbacks/{job_id}%00/{callback_token(TEST_SECRET, job_id)}",
        "a very long id": signed("9" * 3000),
        "extra path segments": signed(job_id) + "/extra",
        "no token at all": f"/callbacks/{job_id}",
    }
    answers = {name: client.post(path, data=body) for name, path in attempts.items()}
    assert statements == []  # refused before any query: the same work for each of them
    unknown = client.post(signed(str(uuid.uuid4())), data=body)  # a valid token, no such job
    answers["an unknown job"] = unknown

    shapes = {name: (r.status_code, r.get_data()) for name, r in answers.items()}
    assert set(shapes.values()) == {
        (404, b'{"error":{"code":"not_found","message":"no such callback"}}\n')
    }, shapes
    assert refusal_counts()["callback_not_found"] == refused_before + len(answers)
    assert deliveries(client, auth, job_id) == before


def test_old_and_new_secrets_both_verify_while_the_new_one_signs(
    client: Any, auth: dict[str, str], make_client: Callable[..., Any]
) -> None:
    job_id = new_job(client, auth)
    rotated = make_client(callback_secrets=(NEW_SECRET, TEST_SECRET))
    preview = generation("preview")
    assert rotated.post(signed(job_id, TEST_SECRET), data=envelope(preview)).status_code == 200
    final = envelope(generation("final", preview["uuid"], [i["uuid"] for i in preview["items"]]))
    assert rotated.post(signed(job_id, NEW_SECRET), data=final).status_code == 200
    assert job_state(rotated, auth, job_id)["status"] == "completed"
    retired = make_client(callback_secrets=(NEW_SECRET,))
    assert retired.post(signed(job_id, TEST_SECRET), data=final).status_code == 404


ALLOWED = (ip_network("203.0.113.0/24"),)


@pytest.mark.parametrize(
    ("hops", "remote", "forwarded", "status"),
    [
        (0, "203.0.113.9", None, 200),
        (0, "127.0.0.1", None, 403),
        (0, "127.0.0.1", "203.0.113.9", 403),  # the header is not believed by default
        (1, "10.0.0.1", "203.0.113.9", 200),  # the trusted proxy says who called
        (1, "10.0.0.1", "203.0.113.9, 198.51.100.1", 403),  # the caller wrote the first entry
        (2, "10.0.0.1", "203.0.113.9, 10.0.0.2", 200),
        (1, "10.0.0.1", "junk", 403),
    ],
)
def test_callbacks_may_be_limited_to_source_networks(
    client: Any,
    auth: dict[str, str],
    make_client: Callable[..., Any],
    hops: int,
    remote: str,
    forwarded: str | None,
    status: int,
) -> None:
    job_id = new_job(client, auth)
    limited = make_client(callback_allowed_networks=ALLOWED, trust_proxy_hops=hops)
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    refused_before = refusal_counts().get("callback_source", 0)
    response = limited.post(
        signed(job_id),
        data=envelope(generation("preview")),
        headers=headers,
        environ_base={"REMOTE_ADDR": remote},
    )
    assert response.status_code == status
    if status == 403:
        assert response.get_json()["error"]["code"] == "forbidden"
        assert refusal_counts()["callback_source"] == refused_before + 1
        assert deliveries(client, auth, job_id) == []
    else:
        assert deliveries(client, auth, job_id)[0]["source_addr"] == "203.0.113.9"


def test_a_body_or_header_quoting_a_secret_is_kept_without_it(
    client: Any, auth: dict[str, str]
) -> None:
    job_id = new_job(client, auth)
    url = "http://testserver" + signed(job_id)
    body = json.dumps({"type": "failure", "error": {"errormsg": f"echo {url} {TEST_SECRET}"}})
    response = client.post(
        signed(job_id), data=body, content_type="application/json", headers={"X-Request-Id": url}
    )
    assert response.status_code == 200
    (kept,) = deliveries(client, auth, job_id)
    stored = json.dumps(kept) + response.get_data(as_text=True)
    assert callback_token(TEST_SECRET, job_id) not in stored and TEST_SECRET not in stored
    assert f"/callbacks/{job_id}/[redacted]" in kept["body"]
    assert kept["headers"]["X-Request-Id"].endswith("[redacted]")


def test_a_body_claiming_another_jobs_items_is_kept_and_changes_nothing(
    client: Any, auth: dict[str, str], enqueuer: RecordingEnqueuer
) -> None:
    first, second = new_job(client, auth), new_job(client, auth)
    preview = generation("preview")
    assert client.post(signed(first), data=envelope(preview)).status_code == 200
    before = job_state(client, auth, second)
    stolen = generation("preview", items=[item["uuid"] for item in preview["items"]])
    response = client.post(signed(second), data=envelope(stolen))
    assert response.status_code == 200 and response.get_json()["received"] is True
    assert job_state(client, auth, second) == before
    assert [d["outcome"] for d in deliveries(client, auth, second)] == ["error"]
