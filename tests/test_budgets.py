"""Daily generation budgets on a real database: counted at creation, race-free, and refused
over the limit with 429 (nothing created, nothing sent)."""

from __future__ import annotations

import dataclasses
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.common.doubles import RecordingEnqueuer
from tests.common.statements import round_trips
from webhook_app.infra.db import Database
from webhook_app.infra.queue import SUBMIT_JOB
from webhook_app.models import Event, Job, utcnow
from webhook_app.services import budgets
from webhook_app.services.api_tokens import create_token
from webhook_app.services.jobs import JobRequest, create_job
from webhook_app.settings import Settings

NOW = datetime(2026, 3, 4, 22, 30, tzinfo=UTC)


def fresh_budget(limit: int | None) -> budgets.Budget:
    return budgets.Budget(f"test:{secrets.token_hex(6)}", limit, "a test budget")


def test_a_budget_counts_up_to_its_limit_then_refuses(session: Session) -> None:
    budget = fresh_budget(2)
    budgets.charge(session, [budget], now=NOW)
    budgets.charge(session, [budget], now=NOW)
    with pytest.raises(budgets.BudgetExceeded) as refused:
        budgets.charge(session, [budget], now=NOW)
    assert refused.value.resets_at == datetime(2026, 3, 5, tzinfo=UTC)
    assert refused.value.seconds_left(NOW) == 90 * 60
    assert refused.value.as_error()["resets_at"] == "2026-03-05T00:00:00Z"
    assert budgets.used_today(session, [budget.name], now=NOW) == {budget.name: 2}
    # A new UTC day starts from nothing.
    budgets.charge(session, [budget], now=NOW + timedelta(hours=2))
    assert budgets.used_today(session, [budget.name], now=NOW + timedelta(hours=2)) == {
        budget.name: 1
    }


def test_no_limit_counts_and_never_refuses(session: Session) -> None:
    budget = fresh_budget(None)
    for _ in range(5):
        budgets.charge(session, [budget], now=NOW)
    assert budgets.usage(session, [budget], now=NOW)[budget.name] == {
        "used": 5,
        "limit": None,
        "remaining": None,
    }


def create_refused(session: Session, counted: list[budgets.Budget]) -> None:
    """Create a job against `counted`, in a savepoint that a refusal rolls back."""
    with session.begin_nested():
        create_job(
            session, JobRequest("a fox"), now=NOW, deadline=timedelta(hours=1), budgets=counted
        )


def test_a_refused_job_is_not_created_and_its_other_budgets_are_not_counted(
    session: Session,
) -> None:
    roomy, full = fresh_budget(10), fresh_budget(0)
    before = session.scalar(select(func.count()).select_from(Job))
    with pytest.raises(budgets.BudgetExceeded) as refused:
        create_refused(session, [roomy, full])
    assert refused.value.budget == full
    assert session.scalar(select(func.count()).select_from(Job)) == before
    assert budgets.used_today(session, [roomy.name], now=NOW) == {roomy.name: 0}


def test_the_first_full_budget_is_named_and_a_later_one_is_not_counted(
    session: Session,
) -> None:
    full, roomy = fresh_budget(1), fresh_budget(10)
    budgets.charge(session, [full], now=NOW)
    with pytest.raises(budgets.BudgetExceeded) as refused:
        create_refused(session, [full, roomy])
    assert refused.value.budget == full
    assert budgets.used_today(session, [full.name, roomy.name], now=NOW) == {
        full.name: 1,
        roomy.name: 0,
    }


def test_a_job_its_event_and_its_budgets_are_one_statement_on_postgresql(
    database: Database,
) -> None:
    deployment, token = fresh_budget(None), fresh_budget(2)
    with round_trips(database) as trips, database.transaction() as session:
        job, created = create_job(
            session,
            JobRequest("a fox", medium="art"),
            now=NOW,
            deadline=timedelta(hours=1),
            budgets=[deployment, token],
        )
        assert session.info["after_commit"] == {(SUBMIT_JOB, (job.id,)): None}
    if database.engine.dialect.name == "postgresql":
        assert len(trips.sent) == 3, trips.sent  # BEGIN, the statement, COMMIT
    with database.read() as session:
        stored = session.get(Job, job.id)
        assert stored is not None and created
        assert (stored.status, stored.medium, stored.version) == ("queued", "art", 1)
        assert stored.change_seq == job.change_seq > 0
        assert [(e.from_status, e.to_status, e.source) for e in _events(session, job.id)] == [
            (None, "queued", "api")
        ]
        assert budgets.used_today(session, [deployment.name, token.name], now=NOW) == {
            deployment.name: 1,
            token.name: 1,
        }


def _events(session: Session, job_id: int) -> list[Event]:
    return list(session.scalars(select(Event).where(Event.job_id == job_id).order_by(Event.id)))


def test_an_idempotent_replay_is_not_counted_even_over_budget(session: Session) -> None:
    budget = fresh_budget(1)
    key = secrets.token_hex(8)
    first, created = create_job(
        session,
        JobRequest("a fox"),
        now=NOW,
        deadline=timedelta(hours=1),
        idempotency_key=key,
        budgets=[budget],
    )
    again, created_again = create_job(
        session,
        JobRequest("a fox"),
        now=NOW,
        deadline=timedelta(hours=1),
        idempotency_key=key,
        budgets=[budget],
    )
    assert (created, created_again, again.id) == (True, False, first.id)
    assert budgets.used_today(session, [budget.name], now=NOW) == {budget.name: 1}


def race(attempt: Callable[[], None], threads: int = 8, tries: int = 3) -> list[bool]:
    """Each of `threads` threads, started together, makes `tries` attempts; whether each was
    granted (False: refused by a budget)."""
    granted: list[bool] = []
    start = threading.Barrier(threads)

    def run() -> None:
        start.wait()
        for _ in range(tries):
            try:
                attempt()
                granted.append(True)
            except budgets.BudgetExceeded:
                granted.append(False)

    running = [threading.Thread(target=run) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    return granted


def test_web_processes_racing_for_the_last_generations_never_overspend(
    database: Database,
) -> None:
    budget = fresh_budget(5)

    def spend() -> None:
        with database.transaction() as session:
            budgets.charge(session, [budget], now=utcnow())

    granted = race(spend)
    assert granted.count(True) == 5 and granted.count(False) == 19
    with database.read() as session:
        assert budgets.used_today(session, [budget.name], now=utcnow()) == {budget.name: 5}


def test_jobs_racing_for_the_last_generations_are_created_only_while_every_budget_has_room(
    database: Database,
) -> None:
    unlimited, limited = fresh_budget(None), fresh_budget(5)
    prompt = f"racing {limited.name}"

    def create() -> None:
        with database.transaction() as session:
            create_job(
                session,
                JobRequest(prompt),
                now=utcnow(),
                deadline=timedelta(hours=1),
                budgets=[unlimited, limited],
            )

    granted = race(create)
    assert granted.count(True) == 5 and granted.count(False) == 19
    with database.read() as session:
        made = session.scalar(select(func.count()).select_from(Job).where(Job.prompt == prompt))
        assert made == 5
        # What the refused requests counted against the unlimited budget was rolled back.
        assert budgets.used_today(session, [unlimited.name, limited.name], now=utcnow()) == {
            unlimited.name: 5,
            limited.name: 5,
        }


# --- through the HTTP API ------------------------------------------------------------------


@pytest.fixture
def budgeted(settings: Settings, database: Database) -> Any:
    """An app whose deployment budget leaves room for exactly two more generations today."""
    from webhook_app.app import create_app

    with database.read() as session:
        used = budgets.used_today(session, [budgets.DEPLOYMENT], now=utcnow())
    enqueuer = RecordingEnqueuer()
    app = create_app(
        dataclasses.replace(settings, daily_generation_budget=used[budgets.DEPLOYMENT] + 2),
        enqueuer=enqueuer,
    )
    yield app.test_client(), enqueuer
    app.extensions["webhook_app"].db.dispose()


def test_the_request_over_the_deployment_budget_gets_429_and_nothing_is_sent(
    budgeted: Any, auth: dict[str, str], database: Database
) -> None:
    client, enqueuer = budgeted
    made = [client.post("/api/v1/jobs", json={"prompt": "a fox"}, headers=auth) for _ in range(2)]
    refused = client.post("/api/v1/jobs", json={"prompt": "one too many"}, headers=auth)

    assert [r.status_code for r in made] == [202, 202]
    assert refused.status_code == 429
    error = refused.get_json()["error"]
    assert error["code"] == "budget_exceeded" and error["budget"] == "deployment"
    assert error["resets_at"].endswith("T00:00:00Z")
    assert "resets at" in error["message"]
    assert 0 < int(refused.headers["Retry-After"]) <= 86400
    assert len(enqueuer.sent) == 2
    with database.read() as session:
        assert session.scalar(select(Job.id).where(Job.prompt == "one too many")) is None
    usage = client.get("/api/v1/usage", headers=auth).get_json()
    assert usage["deployment"]["remaining"] == 0
    assert usage["deployment"]["used"] == usage["deployment"]["limit"]
    assert usage["token"] is None


def test_a_token_with_a_daily_limit_is_refused_past_it(client: Any, database: Database) -> None:
    with database.transaction() as session:
        row, token = create_token(
            session, name="limited", scope="write", now=utcnow(), daily_limit=1
        )
        token_id = row.id
    auth = {"Authorization": f"Bearer {token}"}

    first = client.post("/api/v1/jobs", json={"prompt": "a fox"}, headers=auth)
    second = client.post("/api/v1/jobs", json={"prompt": "a wolf"}, headers=auth)
    usage = client.get("/api/v1/usage", headers=auth).get_json()

    assert (first.status_code, second.status_code) == (202, 429)
    assert second.get_json()["error"]["budget"] == "token"
    assert f"API token {token_id} (limited)" in second.get_json()["error"]["message"]
    assert usage["token"] == {
        "id": token_id,
        "name": "limited",
        "used": 1,
        "limit": 1,
        "remaining": 0,
    }


def test_a_negative_daily_limit_is_refused(session: Session) -> None:
    with pytest.raises(ValueError, match="daily limit"):
        create_token(session, name="x", scope="read", now=NOW, daily_limit=-1)
