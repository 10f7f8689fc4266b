"""Archiving result images: real database, real sandbox previews over HTTP, a real directory."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import event, select

from tests.common.factories import T0, generation, make_job
from webhook_app.archive.storage import LocalStorage
from webhook_app.depositphotos.kinds.image_generation import read_generation
from webhook_app.infra.db import Database, follow_ups
from webhook_app.infra.queue import ARCHIVE_ITEMS
from webhook_app.models import ItemArchive, JobItem
from webhook_app.sandbox import SandboxKnobs, SandboxServer
from webhook_app.services import archive
from webhook_app.services.progress import apply_report
from webhook_app.settings import Settings
from webhook_app.tools.stack import free_port

RECHECK = timedelta(minutes=2)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(knobs=SandboxKnobs(preview_delay=0, final_delay=0)) as server:
        yield server


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return dataclasses.replace(settings, archive_dir=str(tmp_path / "archive"))


@pytest.fixture
def storage(settings: Settings) -> LocalStorage:
    return LocalStorage(settings.archive_dir)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def sandbox_generation(sandbox: SandboxServer) -> dict[str, Any]:
    """A finished generation of the sandbox, whose preview URLs serve real PNGs."""
    api = sandbox.url

    def call(command: str, **params: str) -> dict[str, Any]:
        form = {"dp_command": command, "dp_apikey": "k", **params}
        answer: dict[str, Any] = requests.post(api, data=form, timeout=5).json()
        return answer

    session_id = call("login", dp_login_user="u", dp_login_password="p")["sessionid"]
    created = call("imageGenerator.generate", dp_session_id=session_id, dp_prompt="a fox")
    data: dict[str, Any] = call(
        "imageGenerator.get", dp_session_id=session_id, dp_uuid=created["data"]["uuid"]
    )["data"]
    return data


def job_with(database: Database, data: dict[str, Any]) -> tuple[str, list[str], list[Any]]:
    """A job that learned `data`; its public id, item uuids and requested follow-ups."""
    with database.transaction() as session:
        job = make_job(session)
        apply_report(
            session, job, read_generation(data), source="callback", now=T0, recheck_after=RECHECK
        )
        requested = follow_ups(session)
        return job.public_id, [item["uuid"] for item in data["items"]], requested


def archive_of(database: Database, item_uuid: str) -> ItemArchive:
    with database.transaction() as session:
        found = session.scalar(select(ItemArchive).join(JobItem).where(JobItem.uuid == item_uuid))
        assert found is not None
        return found


def run(
    database: Database, storage: LocalStorage, item_uuid: str, clock: Clock, **limits: Any
) -> str | None:
    return archive.archive_items(
        database,
        storage,
        requests.Session(),
        [item_uuid],
        clock=clock,
        max_bytes=limits.get("max_bytes", 1024 * 1024),
        timeout=5,
    )[0]


def test_a_preview_asks_once_for_the_archive_of_its_items(
    database: Database, sandbox: SandboxServer
) -> None:
    data = sandbox_generation(sandbox)
    _, uuids, requested = job_with(database, data)
    assert (ARCHIVE_ITEMS, tuple(uuids)) in requested
    assert all(archive_of(database, u).state == archive.PENDING for u in uuids)

    with database.transaction() as session:
        job = session.scalar(select(JobItem).where(JobItem.uuid == uuids[0])).job  # type: ignore[union-attr]
        apply_report(
            session, job, read_generation(data), source="poll", now=T0, recheck_after=RECHECK
        )
        again = [f for f in follow_ups(session) if f[0] == ARCHIVE_ITEMS]
    assert again == []


def test_the_image_is_kept_with_its_checksum_and_size(
    database: Database, sandbox: SandboxServer, storage: LocalStorage
) -> None:
    data = sandbox_generation(sandbox)
    public_id, uuids, _ = job_with(database, data)
    clock = Clock()

    assert run(database, storage, uuids[0], clock) == archive.ARCHIVED
    assert run(database, storage, uuids[0], clock) is None  # nothing left to do

    upstream = requests.get(data["items"][0]["previewUrl"], timeout=5).content
    kept = archive_of(database, uuids[0])
    stored = storage.root / f"{public_id}/{uuids[0]}.png"
    assert stored.read_bytes() == upstream
    assert kept.sha256 == hashlib.sha256(upstream).hexdigest()
    assert (kept.size, kept.content_type, kept.width, kept.height) == (
        len(upstream),
        "image/png",
        64,
        64,
    )
    assert kept.archived_at == T0 and kept.attempts == 1 and kept.last_error is None


def test_the_items_of_one_message_are_archived_together_in_two_transactions(
    database: Database, sandbox: SandboxServer, storage: LocalStorage
) -> None:
    data = sandbox_generation(sandbox)
    public_id, uuids, _ = job_with(database, data)
    transactions: list[Any] = []
    count = transactions.append
    event.listen(database.engine, "commit", count)
    try:
        states = archive.archive_items(
            database,
            storage,
            requests.Session(),
            [*uuids, "no-such-item"],
            clock=Clock(),
            max_bytes=1024 * 1024,
            timeout=5,
        )
    finally:
        event.remove(database.engine, "commit", count)
    assert states == [archive.ARCHIVED] * len(uuids) + [None]
    assert len(transactions) == 2
    for item_uuid in uuids:
        kept = archive_of(database, item_uuid)
        assert kept.state == archive.ARCHIVED and kept.attempts == 1
        assert (storage.root / f"{public_id}/{item_uuid}.png").exists()


def test_an_expired_preview_fails_with_the_reason(
    database: Database, sandbox: SandboxServer, storage: LocalStorage
) -> None:
    _, uuids, _ = job_with(database, sandbox_generation(sandbox))
    sandbox.knobs.preview_ttl = 0.001
    try:
        assert run(database, storage, uuids[0], Clock()) == archive.FAILED
    finally:
        sandbox.knobs.preview_ttl = 0
    kept = archive_of(database, uuids[0])
    assert kept.last_error == "HTTP 410" and kept.next_attempt_at is None


@pytest.mark.parametrize(
    ("path", "max_bytes", "reason"),
    [
        ("/_sandbox/stats", 1024, "content type 'application/json'"),
        ("PREVIEW", 100, "larger than 100 bytes"),
    ],
)
def test_what_is_not_an_image_we_keep_fails_at_once(
    database: Database,
    sandbox: SandboxServer,
    storage: LocalStorage,
    path: str,
    max_bytes: int,
    reason: str,
) -> None:
    data = sandbox_generation(sandbox)
    if path != "PREVIEW":
        data["items"][0]["previewUrl"] = sandbox.url + path
    _, uuids, _ = job_with(database, data)
    assert run(database, storage, uuids[0], Clock(), max_bytes=max_bytes) == archive.FAILED
    assert reason in (archive_of(database, uuids[0]).last_error or "")


def test_a_passing_failure_is_retried_with_backoff_then_given_up(
    database: Database, storage: LocalStorage
) -> None:
    data = generation("preview")
    for item in data["items"]:
        item["previewUrl"] = f"http://127.0.0.1:{free_port()}/gone.png"  # nobody listens
    _, uuids, _ = job_with(database, data)
    clock = Clock()

    assert run(database, storage, uuids[0], clock) == archive.PENDING
    kept = archive_of(database, uuids[0])
    assert kept.next_attempt_at == T0 + timedelta(seconds=10)
    assert "download failed" in (kept.last_error or "")

    with database.transaction() as session:
        assert uuids[0] not in archive.due_archives(session, now=T0 + timedelta(seconds=5))
    with database.transaction() as session:
        assert uuids[0] in archive.due_archives(session, now=T0 + timedelta(seconds=11))
    with database.transaction() as session:  # leased: the next run leaves it alone
        assert uuids[0] not in archive.due_archives(session, now=T0 + timedelta(seconds=12))

    states = []
    for _ in range(archive.MAX_ATTEMPTS - 1):
        clock.now += timedelta(hours=1)
        states.append(run(database, storage, uuids[0], clock))
    assert states[-1] == archive.FAILED and set(states[:-1]) == {archive.PENDING}
    assert archive_of(database, uuids[0]).attempts == archive.MAX_ATTEMPTS


def test_the_api_serves_our_copy_with_an_etag_and_the_upstream_one_before(
    client: Any,
    auth: dict[str, str],
    database: Database,
    sandbox: SandboxServer,
    storage: LocalStorage,
) -> None:
    data = sandbox_generation(sandbox)
    public_id, uuids, _ = job_with(database, data)
    image = f"/api/v1/jobs/{public_id}/items/{uuids[0]}/image"
    preview = data["items"][0]["previewUrl"]

    job = client.get(f"/api/v1/jobs/{public_id}", headers=auth).get_json()
    assert job["results_archived"] is False
    assert job["items"][0]["archive"]["state"] == "pending"
    assert job["items"][0]["image_url"] == preview
    before = client.get(image, headers=auth)
    assert before.status_code == 307 and before.headers["Location"] == preview
    assert before.headers["Cache-Control"] == "no-store"

    for item_uuid in uuids:
        assert run(database, storage, item_uuid, Clock()) == archive.ARCHIVED
    job = client.get(f"/api/v1/jobs/{public_id}", headers=auth).get_json()
    assert job["results_archived"] is True
    item = job["items"][0]
    assert item["image_url"] == image == item["archive"]["url"]
    assert (item["archive"]["width"], item["archive"]["content_type"]) == (64, "image/png")

    served = client.get(image, headers=auth)
    upstream = requests.get(preview, timeout=5).content
    assert served.status_code == 200 and served.data == upstream
    assert served.headers["Content-Type"] == "image/png"
    assert served.headers["ETag"] == f'"{item["archive"]["sha256"]}"'
    assert "immutable" in served.headers["Cache-Control"]

    cached = client.get(image, headers={**auth, "If-None-Match": served.headers["ETag"]})
    assert cached.status_code == 304 and cached.data == b""
    assert cached.headers["ETag"] == served.headers["ETag"]
    stale = client.get(image, headers={**auth, "If-None-Match": '"something-else"'})
    assert stale.status_code == 200

    assert client.get(image).status_code == 401
    missing = client.get(f"/api/v1/jobs/{public_id}/items/nope/image", headers=auth)
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
