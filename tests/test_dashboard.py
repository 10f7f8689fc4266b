"""The dashboard through Flask's test client on a real database: sign-in, pages, actions."""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from typing import Any

import pytest

from tests.common.doubles import TEST_SECRET, TEST_TOKEN, RecordingEnqueuer
from tests.common.factories import envelope, generation
from webhook_app.infra.callback_tokens import callback_token
from webhook_app.infra.queue import REFRESH_JOB


def csrf(page: Any) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page.get_data(as_text=True))
    assert match, "no CSRF field on the page"
    return match.group(1)


def sign_in(client: Any, token: str = TEST_TOKEN, next_url: str = "") -> Any:
    form = client.get("/login")
    return client.post("/login", data={"token": token, "csrf": csrf(form), "next": next_url})


@pytest.fixture
def signed_in(client: Any) -> Any:
    assert sign_in(client).status_code == 302
    return client


def deliver(client: Any, job_id: str, body: bytes, content_type: str) -> None:
    url = f"/callbacks/{job_id}/{callback_token(TEST_SECRET, job_id)}"
    assert client.post(url, data=body, content_type=content_type).status_code == 200


@pytest.fixture
def finished_job(client: Any, auth: dict[str, str]) -> dict[str, Any]:
    """A job the upstream finished: a form-encoded preview, then a JSON final message."""
    prompt = f"a lighthouse {uuid.uuid4().hex[:6]}"
    job = client.post("/api/v1/jobs", json={"prompt": prompt}, headers=auth).get_json()
    preview = generation("preview")
    form = "&".join(
        [f"data[uuid]={preview['uuid']}", "data[status]=processing"]
        + [
            f"data[items][{n}][uuid]={item['uuid']}&data[items][{n}][previewUrl]="
            f"https%3A%2F%2Fimages.example%2F{item['uuid']}.png"
            for n, item in enumerate(preview["items"])
        ]
    )
    deliver(client, job["id"], form.encode(), "application/x-www-form-urlencoded")
    final = generation("final", preview["uuid"], [i["uuid"] for i in preview["items"]])
    deliver(client, job["id"], envelope(final), "application/json")
    return dict(client.get(f"/api/v1/jobs/{job['id']}", headers=auth).get_json())


def test_pages_need_a_session(client: Any) -> None:
    for path in ("/", "/jobs/some-id"):
        response = client.get(path)
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login?next=")


def test_a_wrong_token_is_refused_and_a_right_one_signs_in(client: Any) -> None:
    refused = sign_in(client, "not-a-token")
    assert refused.status_code == 401 and "not accepted" in refused.get_data(as_text=True)
    assert client.get("/").status_code == 302
    accepted = sign_in(client, next_url="/?status=failed")
    assert accepted.status_code == 302 and accepted.headers["Location"] == "/?status=failed"
    cookie = accepted.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" in cookie  # APP_ENV=test: only development goes without
    assert client.get("/").status_code == 200


def test_development_cookies_work_over_plain_http(settings: Any, enqueuer: Any) -> None:
    from webhook_app.app import create_app

    app = create_app(dataclasses.replace(settings, environment="development"), enqueuer=enqueuer)
    try:
        assert "Secure" not in sign_in(app.test_client()).headers["Set-Cookie"]
    finally:
        app.extensions["webhook_app"].db.dispose()


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:x"]
)
def test_sign_in_never_redirects_off_site(client: Any, target: str) -> None:
    assert sign_in(client, next_url=target).headers["Location"] == "/"


def test_forms_without_the_csrf_token_are_refused(signed_in: Any) -> None:
    assert signed_in.post("/logout").status_code == 400
    assert signed_in.post("/jobs", data={"prompt": "x"}).status_code == 400
    assert signed_in.post("/login", data={"token": TEST_TOKEN, "csrf": "forged"}).status_code == 400


def test_the_list_shows_jobs_thumbnails_counts_and_filters(
    signed_in: Any, finished_job: dict[str, Any]
) -> None:
    page = signed_in.get("/").get_data(as_text=True)
    assert finished_job["prompt"] in page
    row = page[page.index(f'data-job-id="{finished_job["id"]}"') :]
    row = row[: row.index("</li>")]
    assert row.count("<img ") == 4 and finished_job["items"][0]["preview_url"] in row
    assert 'data-test="status">completed<' in row
    assert signed_in.get("/dashboard/static/dashboard.css").status_code == 200

    other = signed_in.get("/", query_string={"q": "no prompt says this"}).get_data(as_text=True)
    assert finished_job["prompt"] not in other and "match these filters" in other
    failed = signed_in.get("/", query_string={"status": "failed"}).get_data(as_text=True)
    assert finished_job["id"] not in failed

    fragment = signed_in.get("/", query_string={"partial": "1"}).get_data(as_text=True)
    assert fragment.lstrip().startswith('<div id="live"') and "<html" not in fragment


def test_the_refreshed_list_is_a_304_while_neither_it_nor_its_counts_change(
    signed_in: Any, auth: dict[str, str]
) -> None:
    words = {"q": uuid.uuid4().hex[:8], "partial": "1"}
    signed_in.post("/api/v1/jobs", json={"prompt": f"{words['q']} first"}, headers=auth)
    first = signed_in.get("/", query_string=words)
    tag = first.headers["ETag"]
    assert first.status_code == 200 and tag.startswith('"list:')
    assert first.headers["Cache-Control"] == "private, no-cache"

    again = signed_in.get("/", query_string=words, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == tag

    signed_in.post("/api/v1/jobs", json={"prompt": f"{words['q']} second"}, headers=auth)
    changed = signed_in.get("/", query_string=words, headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    assert f"{words['q']} second" in changed.get_data(as_text=True)
    stale = signed_in.get("/", query_string=words, headers={"If-None-Match": '"list:x+y"'})
    assert stale.status_code == 200 and f"{words['q']} first" in stale.get_data(as_text=True)


def test_the_list_pages_with_the_api_cursor(signed_in: Any, auth: dict[str, str]) -> None:
    tag = uuid.uuid4().hex[:8]
    for n in range(22):
        signed_in.post("/api/v1/jobs", json={"prompt": f"{tag} {n}"}, headers=auth)
    first = signed_in.get("/", query_string={"q": tag}).get_data(as_text=True)
    assert f"{tag} 21" in first and f"{tag} 1<" not in first
    older = re.search(r'href="([^"]+)" data-test="older"', first)
    assert older
    second = signed_in.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert f"{tag} 1<" in second and f"{tag} 21" not in second
    assert 'data-running="true"' in second  # queued jobs: the page refreshes itself


def test_a_job_can_be_created_from_the_page(signed_in: Any, enqueuer: RecordingEnqueuer) -> None:
    form = signed_in.get("/")
    prompt = f"from the page {uuid.uuid4().hex[:6]}"
    made = signed_in.post("/jobs", data={"prompt": prompt, "medium": "art", "csrf": csrf(form)})
    assert made.status_code == 302
    page = signed_in.get("/").get_data(as_text=True)
    assert prompt in page and "queued." in page
    refused = signed_in.post("/jobs", data={"prompt": " ", "csrf": csrf(form)})
    assert "Not created: prompt" in signed_in.get(refused.headers["Location"]).get_data(
        as_text=True
    )


def test_the_job_page_shows_images_timeline_and_deliveries(
    signed_in: Any, finished_job: dict[str, Any]
) -> None:
    page = signed_in.get(f"/jobs/{finished_job['id']}").get_data(as_text=True)
    images = re.findall(r'<img src="([^"]+)"[^>]*data-test="image"', page)
    assert images == [item["preview_url"] for item in finished_job["items"]]
    for item in finished_job["items"]:
        assert f"dpItemId <b>{item['dp_item_id']}</b>" in page
    assert page.count('data-test="delivery-body"') == 2
    assert "data[status] = processing" in page  # the form body, one field a line
    assert "  &#34;type&#34;: &#34;success&#34;," in page  # the JSON body, indented
    for status in ("queued", "processing", "completed"):
        assert f'status-{status}">{status}</span>' in page
    assert signed_in.get("/jobs/no-such-job").status_code == 404


def test_operator_actions_from_the_job_page(
    signed_in: Any,
    auth: dict[str, str],
    finished_job: dict[str, Any],
    enqueuer: RecordingEnqueuer,
) -> None:
    page = signed_in.get(f"/jobs/{finished_job['id']}")
    text = page.get_data(as_text=True)
    assert "data-action=" not in text  # a completed job offers nothing to do
    refreshed = signed_in.post(f"/jobs/{finished_job['id']}/refresh", data={"csrf": csrf(page)})
    assert refreshed.status_code == 302
    assert "Refresh now: done." in signed_in.get(refreshed.headers["Location"]).get_data(
        as_text=True
    )
    assert enqueuer.sent[-1][0] == REFRESH_JOB

    queued = signed_in.post("/api/v1/jobs", json={"prompt": "an otter"}, headers=auth).get_json()
    page = signed_in.get(f"/jobs/{queued['id']}")
    assert 'data-action="cancel"' in page.get_data(as_text=True)
    signed_in.post(f"/jobs/{queued['id']}/cancel", data={"csrf": csrf(page)})
    page = signed_in.get(f"/jobs/{queued['id']}")
    assert 'data-action="retry"' in page.get_data(as_text=True)
    retried = signed_in.post(f"/jobs/{queued['id']}/retry", data={"csrf": csrf(page)})
    new_page = signed_in.get(retried.headers["Location"]).get_data(as_text=True)
    assert "Retried as this new job." in new_page and "an otter" in new_page
    assert retried.headers["Location"] != f"/jobs/{queued['id']}"

    gone = signed_in.post(f"/jobs/{uuid.uuid4()}/refresh", data={"csrf": csrf(page)})
    assert "No such job." in signed_in.get("/").get_data(as_text=True)
    assert gone.status_code == 302
    assert (
        signed_in.post(f"/jobs/{finished_job['id']}/explode", data={"csrf": csrf(page)}).status_code
        == 404
    )


def test_sign_out_and_revoked_tokens_end_the_session(app: Any, signed_in: Any) -> None:
    page = signed_in.get("/")
    assert page.headers["Cache-Control"] == "no-store"
    out = signed_in.post("/logout", data={"csrf": csrf(page)})
    assert out.headers["Location"] == "/login"
    assert signed_in.get("/").status_code == 302

    assert sign_in(signed_in).status_code == 302
    services = app.extensions["webhook_app"]
    services.settings = dataclasses.replace(services.settings, api_tokens=("rotated",))
    revoked = signed_in.get("/")
    assert revoked.status_code == 302 and revoked.headers["Location"] == "/login"
    assert "no longer accepted" in signed_in.get("/login").get_data(as_text=True)
    assert json.loads(signed_in.get("/api/v1/openapi.json").get_data())["openapi"] == "3.1.0"


def test_a_pause_shows_a_banner_and_usage_is_shown_with_the_jobs(
    signed_in: Any, database: Any
) -> None:
    from webhook_app.models import utcnow
    from webhook_app.services import upstream_state

    reason = {"kind": "credentials_refused", "exception": "EAPI\\EIllegalApiKey"}
    with database.transaction() as session:
        upstream_state.pause(session, reason, now=utcnow(), first_probe=5)
    try:
        paused = signed_in.get("/").get_data(as_text=True)
        ready = signed_in.get("/readyz")
        state = signed_in.get("/api/v1/upstream", headers={"Authorization": f"Bearer {TEST_TOKEN}"})
    finally:
        with database.transaction() as session:
            upstream_state.resume(session)
    running = signed_in.get("/").get_data(as_text=True)

    assert 'data-test="upstream-paused"' in paused and "Submissions are paused" in paused
    assert 'data-test="upstream-paused"' not in running
    assert 'data-test="usage"' in running and "Generations today:" in running
    assert ready.status_code == 200
    assert ready.get_json()["checks"]["upstream"].startswith("degraded: credentials refused")
    assert state.get_json()["paused"] is True
    assert state.get_json()["reason"]["exception"] == "EAPI\\EIllegalApiKey"


def test_the_jobs_page_says_when_no_worker_is_working(signed_in: Any, database: Any) -> None:
    from webhook_app.models import utcnow
    from webhook_app.services import heartbeats

    name = "celery@dashboard-test (pid 1)"
    silent = signed_in.get("/").get_data(as_text=True)
    with database.transaction() as session:
        heartbeats.record(
            session, name, broker="redis://r:6379/0", state=heartbeats.OK, detail=None,
            started_at=utcnow(), now=utcnow(),
        )  # fmt: skip
    try:
        working = signed_in.get("/").get_data(as_text=True)
        listed = signed_in.get(
            "/api/v1/workers", headers={"Authorization": f"Bearer {TEST_TOKEN}"}
        ).get_json()
    finally:
        with database.transaction() as session:
            heartbeats.forget(session, name)
    assert 'data-test="workers-down"' in silent and "no worker has reported" in silent
    assert 'data-test="workers-down"' not in working
    assert listed["summary"] == "ok" and [w["name"] for w in listed["workers"]] == [name]
