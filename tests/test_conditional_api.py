"""ETags and 304s, the changes feed and the batch read, through Flask's test client on a real
database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

from sqlalchemy import event

from tests.common.doubles import TEST_SECRET
from tests.common.factories import envelope, generation
from webhook_app.infra.callback_tokens import callback_token
from webhook_app.tools.stack import wait_until
from webhook_app.web.answers import AnswerCache

JOBS = "/api/v1/jobs"


def create(client: Any, auth: dict[str, str], prompt: str, **fields: Any) -> dict[str, Any]:
    response = client.post(JOBS, json={"prompt": prompt, **fields}, headers=auth)
    assert response.status_code == 202, response.get_json()
    return dict(response.get_json())


def deliver(client: Any, job_id: str, data: dict[str, Any]) -> None:
    url = f"/callbacks/{job_id}/{callback_token(TEST_SECRET, job_id)}"
    response = client.post(url, data=envelope(data), content_type="application/json")
    assert response.status_code == 200, response.get_json()


def statements(app: Any) -> list[str]:
    """Every statement the app's engine sends from now on."""
    sent: list[str] = []
    for engine in app.extensions["webhook_app"].db.engines:
        event.listen(engine, "before_cursor_execute", lambda _c, _k, sql, *_: sent.append(sql))
    return sent


def test_a_job_answer_is_tagged_by_its_version_and_304_reads_no_item(
    app: Any, client: Any, auth: dict[str, str]
) -> None:
    job = create(client, auth, "tagged")
    path = f"{JOBS}/{job['id']}"
    first = client.get(path, headers=auth)
    tag = first.headers["ETag"]
    assert tag == f'"{first.get_json()["version"]}.1"' and first.get_json()["version"] == 1
    assert first.headers["Cache-Control"] == "private, no-cache"

    sent = statements(app)
    unchanged = client.get(path, headers={**auth, "If-None-Match": tag})
    assert unchanged.status_code == 304 and unchanged.data == b""
    assert unchanged.headers["ETag"] == tag and unchanged.headers["Retry-After"] == "5"
    # Its headers update the stored JSON answer: the policy is a JSON answer's, not a page's.
    assert unchanged.headers["Content-Security-Policy"] == first.headers["Content-Security-Policy"]
    reads = [sql for sql in sent if sql.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 1 and "job_items" not in reads[0]
    weak = client.get(path, headers={**auth, "If-None-Match": f'"x", W/{tag}'})
    assert weak.status_code == 304

    preview = generation("preview")
    deliver(client, job["id"], preview)
    changed = client.get(path, headers={**auth, "If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    assert changed.get_json()["version"] > 1 and len(changed.get_json()["items"]) == 4
    assert client.get(path, headers={**auth, "If-None-Match": '"999.1"'}).status_code == 200
    cancelled = client.post(f"{path}/cancel", headers=auth)
    assert cancelled.status_code == 409  # processing now: the answer of a refusal has no tag
    other = create(client, auth, "cancelled")
    answer = client.post(f"{JOBS}/{other['id']}/cancel", headers=auth)
    read_back = client.get(f"{JOBS}/{other['id']}", headers=auth)
    assert answer.headers["ETag"] == read_back.headers["ETag"] == '"2.1"'
    assert answer.get_json() == read_back.get_json()
    missing = client.get(f"{JOBS}/{uuid.uuid4()}", headers={**auth, "If-None-Match": tag})
    assert missing.status_code == 404


def test_an_answer_kept_by_the_process_follows_every_change_of_its_job(
    app: Any, client: Any, auth: dict[str, str]
) -> None:
    job = create(client, auth, "kept")
    path = f"{JOBS}/{job['id']}"
    first = client.get(path, headers=auth)

    sent = statements(app)
    again = client.get(path, headers=auth)
    assert again.status_code == 200 and again.data == first.data
    assert again.headers["ETag"] == first.headers["ETag"]
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    reads = [sql for sql in sent if sql.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 1 and "job_items" not in reads[0]  # the version alone

    preview = generation("preview")
    deliver(client, job["id"], preview)
    changed = client.get(path, headers=auth).get_json()
    assert changed["status"] == "processing" and len(changed["items"]) == 4
    items = [item["uuid"] for item in preview["items"]]
    deliver(client, job["id"], generation("final", preview["uuid"], items))
    final = client.get(path, headers=auth).get_json()
    assert final["status"] == "completed" and final["version"] > changed["version"]
    assert [item["dp_item_id"] for item in final["items"]] != [None] * 4


def test_without_kept_answers_every_read_is_whole(
    app: Any, client: Any, auth: dict[str, str]
) -> None:
    app.extensions["webhook_app.answers"].size = 0
    job = create(client, auth, "not kept")
    client.get(f"{JOBS}/{job['id']}", headers=auth)
    sent = statements(app)
    client.get(f"{JOBS}/{job['id']}", headers=auth)
    assert any("job_items" in sql for sql in sent)


def test_the_answer_cache_keeps_the_newest_version_and_drops_the_oldest_entry() -> None:
    cache = AnswerCache(2)
    cache.put("a", 2, b"a2")
    cache.put("a", 1, b"a1")  # read before a newer one was kept: the newer one stays
    assert cache.get("a", 2) == b"a2" and cache.get("a", 1) is None
    cache.put("b", 1, b"b1")
    cache.put("c", 1, b"c1")
    assert cache.get("a", 2) is None and cache.get("b", 1) == b"b1"
    assert cache.get("c", 1) == b"c1"
    nothing = AnswerCache(0)
    nothing.put("a", 1, b"a1")
    assert nothing.get("a", 1) is None


def test_list_pages_and_stats_answer_304_while_nothing_changes(
    client: Any, auth: dict[str, str]
) -> None:
    tag = uuid.uuid4().hex[:8]
    job = create(client, auth, f"{tag} listed")
    create(client, auth, f"{tag} listed too")
    query = {"q": tag}
    page = client.get(JOBS, query_string=query, headers=auth)
    etag = page.headers["ETag"]
    again = client.get(JOBS, query_string=query, headers={**auth, "If-None-Match": etag})
    assert again.status_code == 304 and again.headers["Retry-After"] == "5"
    deliver(client, job["id"], generation("preview"))
    moved = client.get(JOBS, query_string=query, headers={**auth, "If-None-Match": etag})
    assert moved.status_code == 200 and len(moved.get_json()["jobs"]) == 2

    stats = client.get("/api/v1/stats", query_string=query, headers=auth)
    stats_tag = stats.headers["ETag"]
    same = client.get(
        "/api/v1/stats", query_string=query, headers={**auth, "If-None-Match": stats_tag}
    )
    assert same.status_code == 304
    create(client, auth, f"{tag} one more")
    more = client.get(
        "/api/v1/stats", query_string=query, headers={**auth, "If-None-Match": stats_tag}
    )
    assert more.status_code == 200 and more.get_json()["total"] == 3


def feed(client: Any, auth: dict[str, str], after: str, **query: Any) -> Any:
    response = client.get(JOBS, query_string={"changed_after": after, **query}, headers=auth)
    assert response.status_code == 200, response.get_json()
    return response


def test_the_feed_gives_changes_in_order_with_filters_and_a_new_cursor(
    client: Any, auth: dict[str, str]
) -> None:
    team = {"team": uuid.uuid4().hex[:8]}
    start = feed(client, auth, "now").get_json()
    assert start["jobs"] == [] and start["more"] is False
    first = create(client, auth, "feed one", metadata=team)
    second = create(client, auth, "feed two", metadata={**team, "extra": 1})
    create(client, auth, "another team's", metadata={"team": "other"})
    deliver(client, first["id"], generation("preview"))  # first changes after second

    mine = {"metadata": json.dumps(team)}

    def both() -> Any:
        # A writing transaction open elsewhere on the server holds the feed back a moment.
        page = feed(client, auth, start["next_cursor"], **mine).get_json()
        return page if len(page["jobs"]) == 2 else None

    page = wait_until(both, 30, "both changes in the feed")
    assert [(j["id"], j["status"]) for j in page["jobs"]] == [
        (second["id"], "queued"),
        (first["id"], "processing"),
    ]
    assert page["jobs"][1]["version"] == 2
    processing = feed(client, auth, start["next_cursor"], status="processing", **mine).get_json()
    assert [j["id"] for j in processing["jobs"]] == [first["id"]]

    # A change at a time: the cursor goes on from the last change read, and a page whose
    # change the filter left out (another team's job, or whatever other tests change on the
    # same server meanwhile) is empty but says there is more.
    pages, cursor = [], start["next_cursor"]
    while not pages or pages[-1]["more"]:
        pages.append(feed(client, auth, cursor, limit=1, **mine).get_json())
        cursor = pages[-1]["next_cursor"]
        if [j["id"] for j in pages[-1]["jobs"]] == [first["id"]]:
            break
    ids = [[j["id"] for j in p["jobs"]] for p in pages]
    assert [i for i in ids if i] == [[second["id"]], [first["id"]]]
    assert [] in ids[ids.index([second["id"]]) :], "another team's job lies between them"
    assert all(p["more"] for p in pages[:-1])

    empty = feed(client, auth, page["next_cursor"], **mine)
    assert empty.get_json()["jobs"] == [] and empty.headers["Retry-After"] == "5"
    everything = feed(client, auth, "0", limit=200).get_json()
    assert everything["jobs"] and everything["more"] in (True, False)


def test_a_held_feed_page_answers_as_soon_as_a_change_comes(
    client: Any, auth: dict[str, str]
) -> None:
    team = {"team": uuid.uuid4().hex[:8]}
    cursor = feed(client, auth, "now").get_json()["next_cursor"]
    job = create(client, auth, "waited for", metadata=team)
    # Past its creation first: a transaction elsewhere on the server may hold it back a while.
    for _ in range(10):
        page = feed(client, auth, cursor, metadata=json.dumps(team), wait=5).get_json()
        cursor = page["next_cursor"]
        if [j["id"] for j in page["jobs"]] == [job["id"]]:
            break
    timer = threading.Timer(0.6, deliver, args=(client, job["id"], generation("preview")))
    started = time.monotonic()
    timer.start()
    try:
        query = {"metadata": json.dumps(team), "wait": 25}
        page = feed(client, auth, cursor, **query).get_json()
    finally:
        timer.join()
    elapsed = time.monotonic() - started
    assert [j["id"] for j in page["jobs"]] == [job["id"]]
    assert 0.5 < elapsed < 30  # at once, unless a transaction elsewhere holds the feed back
    started = time.monotonic()
    quiet = feed(client, auth, page["next_cursor"], **{**query, "wait": 0.4})
    assert quiet.get_json()["jobs"] == [] and time.monotonic() - started >= 0.4


def test_bad_feed_parameters_are_refused_naming_them(client: Any, auth: dict[str, str]) -> None:
    for query, field in [
        ({"changed_after": "garbage"}, "changed_after"),
        ({"changed_after": "eyJiZWZvcmUiOiAxfQ"}, "changed_after"),  # a list cursor
        ({"changed_after": "now", "wait": "-1"}, "wait"),
        ({"changed_after": "now", "metadata": "[1]"}, "metadata"),
        ({"changed_after": "now", "metadata": "{"}, "metadata"),
        ({"changed_after": "now", "cursor": "x"}, "cursor"),
        ({"changed_after": "now", "limit": "0"}, "limit"),
        ({"wait": "1"}, "wait"),
        ({"metadata": "{}"}, "metadata"),
    ]:
        response = client.get(JOBS, query_string=query, headers=auth)
        assert response.status_code == 400, (query, response.get_json())
        assert response.get_json()["error"]["field"] == field


def test_batch_get_reads_up_to_200_jobs_and_names_the_missing(
    client: Any, auth: dict[str, str]
) -> None:
    made = [create(client, auth, f"batch {n}")["id"] for n in range(3)]
    unknown = str(uuid.uuid4())
    asked = [made[2], unknown, made[0], made[2], "not-an-id"]
    response = client.post(f"{JOBS}/batch-get", json={"ids": asked}, headers=auth)
    assert response.status_code == 200
    body = response.get_json()
    assert [job["id"] for job in body["jobs"]] == [made[2], made[0]]
    assert body["missing"] == [unknown, "not-an-id"]
    assert all(len(job["items"]) == 0 and job["version"] == 1 for job in body["jobs"])

    for payload, field, status in [
        ({"ids": [str(uuid.uuid4()) for _ in range(201)]}, "ids", 422),
        ({"ids": "a,b"}, "ids", 422),
        ({"ids": [1]}, "ids", 422),
        ({"ids": [], "more": 1}, "more", 422),
        ([made[0]], "body", 400),
    ]:
        refused = client.post(f"{JOBS}/batch-get", json=payload, headers=auth)
        assert refused.status_code == status, payload
        assert refused.get_json()["error"]["field"] == field
    assert client.post(f"{JOBS}/batch-get", json={"ids": made}).status_code == 401
