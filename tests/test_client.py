"""webhook_app.tools.client against the real app and database, through an in-process transport."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from tests.common.doubles import TEST_TOKEN
from tests.common.wsgi_transport import session_for
from tests.test_query_api import complete
from webhook_app.tools import client as api


@pytest.fixture
def remote(app: Any) -> api.Client:
    return api.Client("http://app", TEST_TOKEN, http=session_for(app))


def test_create_get_and_iterate_pages(remote: api.Client) -> None:
    tag = uuid.uuid4().hex[:8]
    made = [
        remote.create_job(f"{tag} {n}", medium="art", metadata={"n": n})["id"] for n in range(5)
    ]
    assert remote.get_job(made[0])["metadata"] == {"n": 0}
    listed = [job["id"] for job in remote.iter_jobs(q=tag, limit=2)]
    assert listed == made[::-1]
    assert remote.stats(q=tag)["jobs"]["queued"] == 5


@pytest.mark.parametrize(
    ("call", "error", "status"),
    [
        (lambda c: c.create_job("x", aspect_ratio="7:5"), api.InvalidRequest, 422),
        (lambda c: c.list_jobs(limit=0), api.InvalidRequest, 400),
        (lambda c: c.get_job(str(uuid.uuid4())), api.NotFound, 404),
        (lambda c: c.refresh(c.create_job("fresh")["id"]), api.Conflict, 409),
    ],
)
def test_errors_are_typed_exceptions(
    remote: api.Client, call: Any, error: Any, status: int
) -> None:
    with pytest.raises(error) as raised:
        call(remote)
    assert raised.value.status == status and raised.value.code
    assert isinstance(raised.value, api.ApiError)


def test_a_wrong_token_is_unauthorized(app: Any) -> None:
    stranger = api.Client("http://app", "wrong", http=session_for(app))
    with pytest.raises(api.Unauthorized):
        stranger.list_jobs()


def test_wait_uses_the_long_poll_and_returns_the_terminal_job(app: Any, remote: api.Client) -> None:
    job = remote.create_job("wait for me")
    asked: list[str] = []
    remote._http.hooks["response"].append(lambda r, **_: asked.append(r.request.url))
    timer = threading.Timer(0.5, complete, args=(app.test_client(), job["id"]))
    timer.start()
    try:
        finished = remote.wait(job["id"], timeout=30)
    finally:
        timer.join()
    assert finished["status"] == "completed"
    assert len(asked) == 1 and "wait=25" in asked[0]


def test_wait_gives_up_at_its_timeout(remote: api.Client) -> None:
    job = remote.create_job("never")
    assert remote.wait(job["id"], timeout=0.3)["status"] == "queued"
