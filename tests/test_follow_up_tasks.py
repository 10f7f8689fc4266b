"""What follows a job's completion, the tasks called directly on a real database: its items'
media data (enrich_job) and its duration and hook (job_finished). Their messages carry what
the tasks would otherwise read back; messages of earlier releases are still understood."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from tests.common.databases import new_database_url
from tests.common.doubles import RecordingEnqueuer, use_worker
from tests.common.factories import T0, generation, make_job
from tests.common.statements import round_trips
from webhook_app.depositphotos.client import RateLimited
from webhook_app.depositphotos.kinds.image_generation import read_generation
from webhook_app.infra.db import Database, follow_ups
from webhook_app.infra.queue import ENRICH_JOB, JOB_FINISHED
from webhook_app.models import Job, JobItem
from webhook_app.services.progress import apply_report
from workers.tasks import enrich_job, job_finished

FINISHED_AT = T0 + timedelta(seconds=42.5)


class Upstream:
    """getMediaData: the same answer for every item, or a refusal for those `refused`."""

    def __init__(self, refused: frozenset[str] = frozenset()) -> None:
        self.asked: list[str] = []
        self.refused = refused

    def get_media_data(self, item_uuid: str) -> dict[str, Any]:
        self.asked.append(item_uuid)
        if item_uuid in self.refused:
            raise RateLimited("slow down")
        return {"width": 1024, "height": 768, "type": "image"}


class Hooks(RecordingEnqueuer):
    def __init__(self) -> None:
        super().__init__()
        self.hooked: list[tuple[str, str, dict[str, Any]]] = []

    def send_to(self, queue: str, name: str, **kwargs: Any) -> None:
        self.hooked.append((queue, name, kwargs))


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    url = new_database_url(request.param, tmp_path_factory.mktemp(request.param), request)
    database = Database(url)
    yield database
    database.dispose()


def completed_job(db: Database) -> tuple[int, list[str], dict[str, tuple[Any, ...]]]:
    """A job completed by a callback: its id, its items' uuids, and the arguments of its
    follow-ups as a worker receives them (through JSON)."""
    with db.transaction() as session:
        job = make_job(session)
        data = generation("final")
        report = read_generation(data)
        apply_report(
            session,
            job,
            report,
            source="callback",
            now=FINISHED_AT,
            recheck_after=timedelta(minutes=2),
        )
        asked = {task: json.loads(json.dumps(args)) for task, args in follow_ups(session)}
        return job.id, [item["uuid"] for item in data["items"]], asked


@pytest.fixture
def job(db: Database) -> tuple[int, list[str], dict[str, tuple[Any, ...]]]:
    return completed_job(db)


def position(db: Database, job_id: int) -> tuple[int, int]:
    with db.transaction() as session:
        found = session.get(Job, job_id)
        assert found is not None
        return found.version, found.change_seq


def media(db: Database, job_id: int) -> list[tuple[Any, ...]]:
    with db.transaction() as session:
        rows = session.execute(
            select(JobItem.width, JobItem.height, JobItem.media_type)
            .where(JobItem.job_id == job_id)
            .order_by(JobItem.position)
        )
        return [tuple(row) for row in rows]


def test_a_completed_job_asks_for_its_follow_ups_with_what_they_need(job: Any) -> None:
    job_id, uuids, asked = job
    assert asked[JOB_FINISHED] == [[job_id, "completed", 42.5]]
    assert asked[ENRICH_JOB] == [[job_id, uuids]]


def test_the_media_data_is_kept_in_one_round_trip(
    db: Database, monkeypatch: pytest.MonkeyPatch, job: Any
) -> None:
    job_id, uuids, asked = job
    upstream = Upstream()
    use_worker(db, monkeypatch, upstream, Hooks())
    before = position(db, job_id)
    with round_trips(db) as trips:
        enrich_job(*asked[ENRICH_JOB])
    assert upstream.asked == uuids  # nothing read first: the message lists the items
    assert media(db, job_id) == [(1024, 768, "image")] * 4
    if db.engine.dialect.name == "postgresql":
        # The job's version and the items, in one statement committed as it returns.
        assert (len(trips.statements), trips.transactions) == (1, 0), trips.statements
    else:
        assert trips.transactions == 1
    after = position(db, job_id)
    assert after[0] == before[0] + 1 and after[1] > before[1]


def test_what_was_learned_is_kept_and_a_retry_asks_only_for_the_rest(
    db: Database, monkeypatch: pytest.MonkeyPatch, job: Any
) -> None:
    job_id, uuids, asked = job
    use_worker(db, monkeypatch, Upstream(refused=frozenset(uuids[2:3])), Hooks())
    with pytest.raises(RateLimited):
        enrich_job(*asked[ENRICH_JOB])
    assert media(db, job_id)[:3] == [(1024, 768, "image"), (1024, 768, "image"), (None,) * 3]

    upstream = Upstream()
    use_worker(db, monkeypatch, upstream, Hooks())
    enrich_job.apply(args=asked[ENRICH_JOB], retries=1, throw=True)
    assert upstream.asked == uuids[2:]  # read again on a retry: what is known is not asked
    assert media(db, job_id) == [(1024, 768, "image")] * 4


def test_a_message_of_an_earlier_release_reads_the_items(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = [completed_job(db) for _ in range(2)]
    upstream = Upstream()
    use_worker(db, monkeypatch, upstream, Hooks())
    with round_trips(db) as trips:
        enrich_job(*[job_id for job_id, _, _ in jobs])
    assert upstream.asked == [u for _, uuids, _ in jobs for u in uuids]
    for job_id, _, _ in jobs:
        assert media(db, job_id) == [(1024, 768, "image")] * 4
    if db.engine.dialect.name == "postgresql":
        assert (len(trips.statements), trips.transactions) == (2, 0), trips.statements


def observed(status: str) -> tuple[float, float]:
    """How many durations the metric counted for `status`, and their sum."""
    labels = {"status": status}
    count = REGISTRY.get_sample_value("webhook_app_job_duration_seconds_count", labels)
    total = REGISTRY.get_sample_value("webhook_app_job_duration_seconds_sum", labels)
    return count or 0.0, total or 0.0


def test_a_finished_job_is_counted_without_a_round_trip(
    db: Database, monkeypatch: pytest.MonkeyPatch, job: Any
) -> None:
    _, _, asked = job
    use_worker(db, monkeypatch, Upstream(), Hooks())
    count, total = observed("completed")
    with round_trips(db) as trips:
        job_finished(*asked[JOB_FINISHED])
    assert (len(trips.statements), trips.transactions) == (0, 0)
    assert observed("completed") == (count + 1, total + 42.5)


@pytest.mark.parametrize(
    "shape", ["pairs", "one job"], ids=["job and status", "the earliest: one job's arguments"]
)
def test_messages_of_earlier_releases_read_the_durations(
    db: Database, monkeypatch: pytest.MonkeyPatch, job: Any, shape: str
) -> None:
    job_id = job[0]
    use_worker(db, monkeypatch, Upstream(), Hooks())
    count, total = observed("completed")
    args = [[job_id, "completed"]] if shape == "pairs" else [job_id, "completed"]
    with round_trips(db) as trips:
        job_finished(*args)
    assert len(trips.statements) == 1
    assert observed("completed") == (count + 1, total + 42.5)


def test_a_hook_is_told_the_job_and_its_items(
    db: Database, monkeypatch: pytest.MonkeyPatch, job: Any
) -> None:
    job_id, uuids, asked = job
    ctx = use_worker(db, monkeypatch, Upstream(), Hooks(), on_job_done_task="other.done")
    count, total = observed("completed")
    job_finished(*asked[JOB_FINISHED], [10**9, "failed"])  # a job gone meanwhile: no hook
    ((queue, name, told),) = ctx.enqueuer.hooked  # type: ignore[attr-defined]
    assert (queue, name, told["status"]) == (
        ctx.settings.on_job_done_queue,
        "other.done",
        "completed",
    )
    assert [item["uuid"] for item in told["items"]] == uuids
    assert told["job_id"] == public_id(db, job_id)
    assert observed("completed") == (count + 1, total + 42.5)


def public_id(db: Database, job_id: int) -> str:
    with db.transaction() as session:
        return str(session.scalar(select(Job.public_id).where(Job.id == job_id)))
