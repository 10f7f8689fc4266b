"""Archiving result images: real database, real sandbox previews over HTTP, a real directory."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from tests.common.factories import T0, generation, make_job
from tests.common.statements import round_trips
from webhook_app import changes
from webhook_app.archive.fetch import Fetched
from webhook_app.archive.images import ImageInfo
from webhook_app.archive.storage import LocalStorage
from webhook_app.depositphotos.kinds.image_generation import read_generation
from webhook_app.infra.db import Database, follow_ups
from webhook_app.infra.queue import ARCHIVE_ITEMS
from webhook_app.models import ItemArchive, Job, JobItem
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


def version_of(database: Database, item_uuid: str) -> tuple[int, int]:
    """The version of an item's job and its position in the changes feed."""
    with database.transaction() as session:
        job = session.scalar(select(Job).join(JobItem).where(JobItem.uuid == item_uuid))
        assert job is not None
        return job.version, job.change_seq


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


def test_the_items_of_one_message_are_archived_together_in_two_round_trips(
    database: Database, sandbox: SandboxServer, storage: LocalStorage
) -> None:
    data = sandbox_generation(sandbox)
    public_id, uuids, _ = job_with(database, data)
    before = version_of(database, uuids[0])
    with round_trips(database) as trips:
        states = archive.archive_items(
            database,
            storage,
            requests.Session(),
            [*uuids, "no-such-item"],
            clock=Clock(),
            max_bytes=1024 * 1024,
            timeout=5,
        )
    assert states == [archive.ARCHIVED] * len(uuids) + [None]
    if database.engine.dialect.name == "postgresql":
        # Take the attempts, keep what they achieved: a statement each, committed as it returns.
        assert (len(trips.statements), trips.transactions) == (2, 0), trips.statements
    else:
        assert trips.transactions == 2
    # Both are changes of the job (attempts, then state): its version moved, and its position.
    after = version_of(database, uuids[0])
    assert after[0] == before[0] + 2 and after[1] > before[1]
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


# The archive's columns a comparison looks at: all but its row's own identity.
COMPARED = [
    name
    for name in ItemArchive.__table__.columns.keys()  # noqa: SIM118 - a column collection
    if name not in {"id", "item_id", "created_at"}
]
KEPT = archive.Kept("stem.png", Fetched(b"\x89PNG" * 8, ImageInfo("png", 64, 32), "ab" * 32))


def one_item_job(database: Database, **archived: Any) -> str:
    """A job of one item (its preview URL known, its archive pending), the archive then set
    to `archived` and the item's `preview_url` if given; the item's uuid."""
    item_uuid = str(uuid.uuid4())
    job_with(database, generation("preview", items=[item_uuid]))
    with database.transaction() as session:
        item = session.scalar(select(JobItem).where(JobItem.uuid == item_uuid))
        assert item is not None and item.archive is not None
        if "preview_url" in archived:
            item.preview_url = archived.pop("preview_url")
        for name, value in archived.items():
            setattr(item.archive, name, value)
    return item_uuid


def seen_as(database: Database, item_uuid: str) -> tuple[Any, ...]:
    """The item's archive (the compared columns) and its job's version and position."""
    kept = archive_of(database, item_uuid)
    return (*(getattr(kept, name) for name in COMPARED), *version_of(database, item_uuid))


def compare(
    database: Database, scenarios: list[dict[str, Any]], by_orm: Any, by_statement: Any
) -> None:
    """Each scenario set up twice; `by_orm` given the items of one copy, `by_statement` the
    other's: the same answers, the same archives, the same changes of the jobs."""
    copies = [[one_item_job(database, **dict(s)) for s in scenarios] for _ in range(2)]
    before = [[seen_as(database, u) for u in uuids] for uuids in copies]
    answers = [by_orm(copies[0]), by_statement(copies[1])]
    after = [[seen_as(database, u) for u in uuids] for uuids in copies]
    assert answers[0] == answers[1]
    for n, scenario in enumerate(scenarios):
        (orm_before, statement_before), (orm, statement) = (
            (before[0][n], before[1][n]),
            (after[0][n], after[1][n]),
        )
        assert orm[:-2] == statement[:-2], scenario
        # The version moves by the same steps; the position moves whenever the version does.
        versions = [orm[-2] - orm_before[-2], statement[-2] - statement_before[-2]]
        assert versions[0] == versions[1], (scenario, versions)
        assert (
            (orm[-1] != orm_before[-1])
            == (statement[-1] != statement_before[-1])
            == (versions[0] > 0)
        ), scenario


def postgresql_only(database: Database) -> None:
    if database.engine.dialect.name != "postgresql":
        pytest.skip("SQLite keeps the ORM's transactions")


def test_taking_attempts_in_one_statement_keeps_the_rules(database: Database) -> None:
    postgresql_only(database)
    now = T0 + timedelta(hours=1)
    scenarios = [
        {"state": state, "attempts": 2, **url}
        for state in (archive.PENDING, archive.ARCHIVED, archive.FAILED)
        for url in ({}, {"preview_url": None}, {"preview_url": ""})
    ]

    def answer(uuids: list[str], taken: list[archive.Attempt]) -> list[tuple[Any, ...]]:
        # Which item (the copies' uuids differ), its URL, and where its copy goes.
        assert all(a.key_stem.endswith(f"/{a.item_uuid}") for a in taken)
        return [
            (uuids.index(a.item_uuid), a.url.replace(a.item_uuid, "<uuid>"), len(a.key_stem))
            for a in taken
        ]

    def by_orm(uuids: list[str]) -> list[tuple[Any, ...]]:
        with database.transaction() as session:
            taken = archive.start_attempts(session, [*uuids, "no-such-item"], now=now)
        return answer(uuids, taken)

    def by_statement(uuids: list[str]) -> list[tuple[Any, ...]]:
        with database.connection(writes=True) as connection:
            taken = archive._start_in_one_statement(connection, [*uuids, "no-such-item"], now=now)
        return answer(uuids, taken)

    compare(database, scenarios, by_orm, by_statement)


def test_keeping_outcomes_in_one_statement_keeps_the_rules(database: Database) -> None:
    postgresql_only(database)
    now = T0 + timedelta(hours=1)
    outcomes = {
        "kept": KEPT,
        "passing": archive.Failed("HTTP 503", transient=True),
        "passing again": archive.Failed("HTTP 502", transient=True),  # the same error as before
        "final": archive.Failed("HTTP 410 " + "x" * 600, transient=False),
    }
    archived = {"sha256": "cd" * 32, "size": 7, "content_type": "image/jpeg", "width": 1}
    archived |= {"height": 2, "archived_at": T0, "storage_key": "old.jpg"}
    scenarios = [
        {
            "state": state,
            "attempts": attempts,
            "last_error": "HTTP 502",
            "next_attempt_at": T0,
            **(archived if state == archive.ARCHIVED else {}),
            "outcome": outcome,
        }
        for state in (archive.PENDING, archive.ARCHIVED, archive.FAILED)
        for attempts in (0, 1, archive.MAX_ATTEMPTS - 1, archive.MAX_ATTEMPTS)
        for outcome in outcomes
    ]
    # Kept again, the very same image: only when it was kept changes.
    same = {"sha256": "ab" * 32, "size": 32, "content_type": "image/png", "width": 64}
    same |= {"height": 32, "archived_at": T0, "storage_key": "stem.png", "last_error": None}
    scenarios += [{"state": archive.ARCHIVED, "attempts": 1, **same, "outcome": "kept"}]
    setups = [{k: v for k, v in s.items() if k != "outcome"} for s in scenarios]
    given = [outcomes[s["outcome"]] for s in scenarios]
    missing = {"missing kept": KEPT, "missing failed": outcomes["final"]}

    def by_orm(uuids: list[str]) -> list[str]:
        with database.transaction() as session:
            states = archive.record_outcomes(
                session, {**dict(zip(uuids, given, strict=True)), **missing}, now=now
            )
        return [states[u] for u in [*uuids, *missing]]

    def by_statement(uuids: list[str]) -> list[str]:
        with database.connection(writes=True) as connection:
            states = archive._record_in_one_statement(
                connection, {**dict(zip(uuids, given, strict=True)), **missing}, now=now
            )
        return [states[u] for u in [*uuids, *missing]]

    compare(database, setups, by_orm, by_statement)


def test_the_statement_bumps_the_version_for_what_the_orm_would() -> None:
    # What `record_outcomes` writes, less what webhook_app/changes.py hides.
    written = {"state", "storage_key", "sha256", "size", "content_type", "width", "height"}
    written |= {"last_error", "archived_at", "next_attempt_at"}
    assert set(archive.RECORDED_SHOWN) == written - changes._HIDDEN[ItemArchive]
