"""Job versions and the change order, kept by the database for every writer, on SQLite and
PostgreSQL; and a feed that skips nothing when transactions commit out of order."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from tests.common.factories import T0, generation, make_job
from webhook_app import changes
from webhook_app.depositphotos.kinds.image_generation import read_generation
from webhook_app.depositphotos.reports import Report
from webhook_app.infra.db import Database
from webhook_app.models import Job, JobItem
from webhook_app.services import archive, feed, operator, views
from webhook_app.services.progress import apply_report


def position(database: Database, job_id: int) -> tuple[int, int]:
    with database.transaction() as session:
        row = session.execute(select(Job.version, Job.change_seq).where(Job.id == job_id)).one()
        return row.version, row.change_seq


def report(data: dict[str, Any]) -> Report:
    return read_generation(data)


def new_job(database: Database, prompt: str) -> int:
    with database.transaction() as session:
        return make_job(session, prompt).id


def test_every_writer_bumps_the_version_and_moves_the_job_to_the_end(database: Database) -> None:
    job_id = new_job(database, "versions")
    seen = [position(database, job_id)]
    assert seen[0][0] == 1 and seen[0][1] > 0

    def changed() -> tuple[int, int]:
        now = position(database, job_id)
        assert now[0] > seen[-1][0] and now[1] > seen[-1][1], (seen, now)
        seen.append(now)
        return now

    preview = generation("preview")
    items = [item["uuid"] for item in preview["items"]]
    with database.transaction() as session:  # a callback: the ORM writes job and items
        job = session.get(Job, job_id)
        assert job is not None
        apply_report(
            session,
            job,
            report(preview),
            source="callback",
            now=T0,
            recheck_after=timedelta(minutes=2),
        )
    changed()
    with database.transaction() as session:  # archiving: the archives alone change
        assert archive.start_attempts(session, items[:2], now=T0)
    changed()
    with database.transaction() as session:  # a plain statement on items, then `touch`
        ids = session.scalars(select(JobItem.id).where(JobItem.job_id == job_id)).all()
        session.execute(update(JobItem), [{"id": i, "width": 64, "height": 64} for i in ids])
        changes.touch(session, job_ids=[job_id])
    changed()
    queued = new_job(database, "cancelled")
    before = position(database, queued)
    with database.transaction() as session:  # an operator action
        operator.cancel(session, new_public_id(database, queued), now=T0, reason="test")
    assert position(database, queued)[0] == before[0] + 1


def new_public_id(database: Database, job_id: int) -> str:
    with database.transaction() as session:
        return str(session.scalar(select(Job.public_id).where(Job.id == job_id)))


def test_what_nobody_is_shown_is_not_a_change(database: Database) -> None:
    job_id = new_job(database, "hidden")
    before = position(database, job_id)
    with database.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.polls += 1
        job.next_check_at = T0
        job.status = job.status  # set to what it was: no change
    assert position(database, job_id) == before


def test_the_feed_gives_every_change_once_in_order(database: Database) -> None:
    with database.read() as session:
        start = feed.changes_since(session.connection(), feed.NOW).cursor
    made = [new_job(database, f"feed {n}") for n in range(3)]
    with database.transaction() as session:
        job = session.get(Job, made[0])
        assert job is not None
        job.prompt = "feed 0, changed last"
    seen, cursor = [], start
    deadline = time.monotonic() + 20
    # A transaction open elsewhere on the server (another test) may hold the feed back a
    # moment: the reader asks again, as a poller would.
    while len([j for j in seen if j in made]) < 3 and time.monotonic() < deadline:
        with database.read() as session:
            page = feed.changes_since(session.connection(), cursor, limit=1)
        seen += [job.id for job in page.jobs]
        cursor = page.cursor
        if not page.more:
            time.sleep(0.05)
    assert [j for j in seen if j in made] == [made[1], made[2], made[0]]


def read_until(database: Database, cursor: str, wanted: set[int]) -> list[views.JobView]:
    """Follow the feed until every wanted job has shown up (a transaction open elsewhere on
    the server may hold it back a moment); the wanted jobs' changes, in the order given."""
    seen: list[views.JobView] = []
    deadline = time.monotonic() + 20
    while not wanted <= {job.id for job in seen} and time.monotonic() < deadline:
        with database.read() as session:
            page = feed.changes_since(session.connection(), cursor)
        seen += [job for job in page.jobs if job.id in wanted]
        cursor = page.cursor
        time.sleep(0 if page.more else 0.05)
    return seen


def concurrent_writers(database: Database) -> None:
    if database.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: no transaction commits out of order")


def test_a_change_committed_late_below_a_later_one_is_not_skipped(database: Database) -> None:
    """T1 writes first but commits last; T2 writes after and commits first. A reader in
    between must not pass T1's position, or it would never see T1's change."""
    concurrent_writers(database)
    first, second = new_job(database, "late commit"), new_job(database, "early commit")
    with database.read() as session:
        cursor = feed.changes_since(session.connection(), feed.NOW).cursor
    with Session(database.engine) as t1:
        t1_job = t1.get(Job, first)
        assert t1_job is not None
        t1_job.prompt = "written first, committed last"
        t1.flush()  # T1 holds its transaction id (its change's position) from here
        with database.transaction() as t2:
            t2_job = t2.get(Job, second)
            assert t2_job is not None
            t2_job.prompt = "written second, committed first"
        with database.read() as session:
            early = feed.changes_since(session.connection(), cursor)
        # T2's change waits behind T1's. (A job's creation may still show here: a transaction
        # elsewhere on the server can have held the cursor below it when it was taken.)
        assert second not in [job.id for job in early.jobs]
        assert all(job.prompt == "late commit" for job in early.jobs if job.id == first)
        t1.commit()
    assert [job.id for job in read_until(database, early.cursor, {first, second})] == [
        first,
        second,
    ]


def test_a_reader_waits_for_a_transaction_still_open_not_for_ever(database: Database) -> None:
    """Two real transactions from two threads, interleaved by the database's own row lock:
    the second writer to a job commits after the first, and the feed shows its version."""
    concurrent_writers(database)
    job_id = new_job(database, "two writers")
    with database.read() as session:
        cursor = feed.changes_since(session.connection(), feed.NOW).cursor
    holding, release = threading.Event(), threading.Event()

    def first_writer() -> None:
        with database.transaction() as session:
            job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).one()
            job.prompt = "first"
            session.flush()
            holding.set()
            release.wait(10)

    writer = threading.Thread(target=first_writer)
    writer.start()
    assert holding.wait(10)

    def second_writer() -> None:
        with database.transaction() as session:
            job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).one()
            job.prompt = "second"

    other = threading.Thread(target=second_writer)
    other.start()
    with database.read() as session:
        assert session.execute(text("SELECT 1")).scalar() == 1
        page = feed.changes_since(session.connection(), cursor).jobs
        # Neither write shows while the first is open (its creation may, see above).
        assert all(j.prompt == "two writers" for j in page if j.id == job_id)
    release.set()
    writer.join(10)
    other.join(10)
    ours = read_until(database, cursor, {job_id})
    assert [job.prompt for job in ours] == ["second"] and ours[0].version == 3
