"""Breaking things on purpose: every scenario ends with a ledger that must balance.

Each one runs real processes on loopback with at least CHAOS_JOBS (default 100) jobs, and
checks the promise: every job terminal with its result, none lost, imageGenerator.generate
called exactly once per job (the sandbox counts), and no acknowledged delivery missing.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.common import chaos
from tests.common.chaos import (
    FAST_RECOVERY,
    QUICK_SANDBOX,
    callbacks_acknowledged,
    create_jobs,
    deliveries_stored,
    fetch,
    final_state,
    ledger,
    operator_settles_stranded,
    settle,
)
from tests.common.factories import envelope
from webhook_app.infra.callback_tokens import callback_token
from webhook_app.tools.stack import Stack, free_port, wait_until

pytestmark = pytest.mark.chaos


@pytest.fixture(autouse=True)
def _ledgers_in_the_report(request: pytest.FixtureRequest) -> None:
    chaos.report_properties = request.node.user_properties


def start(stack: Stack, concurrency: int = 2, **knobs: str) -> None:
    stack.env.update(FAST_RECOVERY)
    stack.start_all(concurrency=concurrency, **{**QUICK_SANDBOX, **knobs})


def test_every_callback_lost_all_jobs_complete_by_polling(stack: Stack) -> None:
    start(stack, SANDBOX_DROP_RATE="1")
    ids = create_jobs(stack)
    settle(stack, ids)
    ledger(stack, ids, f"callbacks-lost/{stack.kind}").assert_clean()
    assert stack.sandbox("stats")["callbacks"]["sent"] == 0
    completion = [e for e in stack.client().events(ids[0]) if e["to"] == "completed"]
    assert [e["source"] for e in completion] == ["poll"]


def test_triplicated_and_reversed_deliveries_end_as_one_clean_delivery(stack: Stack) -> None:
    start(stack, SANDBOX_DUPLICATES="3", SANDBOX_REVERSE="1")
    ids = create_jobs(stack, prefix="noisy")
    settle(stack, ids)
    noisy = ledger(stack, ids, f"duplicated-reversed/{stack.kind}")
    noisy.assert_clean()

    stack.sandbox("knobs", {"duplicates": 1, "reverse": False})
    clean_ids = create_jobs(stack, count=10, prefix="clean")
    settle(stack, clean_ids)
    ledger(stack, clean_ids, f"clean-reference/{stack.kind}").assert_clean()

    jobs = fetch(stack, ids + clean_ids)
    assert {final_state(job) for job in jobs.values() if job} == {
        final_state(jobs[clean_ids[0]])  # type: ignore[arg-type]
    }
    client = stack.client()
    for job_id in ids[:10]:
        events = client.events(job_id)
        assert [e["to"] for e in events] == ["queued", "submitting", "submitted", "completed"]
        deliveries = client.deliveries(job_id)
        assert len(deliveries) == 2 and sum(d["received_count"] for d in deliveries) == 6
    assert deliveries_stored(stack, ids + clean_ids) == callbacks_acknowledged(stack)


def test_one_delivery_posted_to_two_web_processes_at_once_makes_one_transition(
    stack: Stack,
) -> None:
    # No callbacks and no polls: the test itself posts the final delivery of every job.
    stack.env["CALLBACK_OVERDUE_AFTER"] = "600"
    stack.start_all(SANDBOX_DROP_RATE="1", SANDBOX_PREVIEW_DELAY="600", SANDBOX_FINAL_DELAY="600")
    second = stack.start_web(name="web2", port=free_port())
    ids = create_jobs(stack, prefix="race")
    submitted = wait_until(
        lambda: (
            (jobs := fetch(stack, ids))
            and all(
                j and j["status"] == "submitted" and len(j["items"]) == 4 for j in jobs.values()
            )
            and jobs
        ),
        90,
        "every job submitted",
    )
    secret = stack.env["CALLBACK_SECRET"].split(",")[0]
    barrier_timeout = 10

    def race(job: dict[str, Any]) -> list[requests.Response]:
        items = [
            {"uuid": item["uuid"], "dpItemId": 800000 + n, "previewUrl": f"https://x.test/{n}"}
            for n, item in enumerate(job["items"])
        ]
        data = {
            "uuid": job["generation_uuid"],
            "status": "completed",
            "purchaseStatus": "paid",
            "items": items,
        }
        body = envelope(data)
        path = f"/callbacks/{job['id']}/{callback_token(secret, job['id'])}"
        barrier = threading.Barrier(2, timeout=barrier_timeout)

        def send(base: str) -> requests.Response:
            barrier.wait()
            return requests.post(
                base + path, data=body, timeout=30, headers={"Content-Type": "application/json"}
            )

        with ThreadPoolExecutor(2) as pair:
            return list(pair.map(send, [stack.url, second]))

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(race, submitted.values()))

    assert all(r.status_code == 200 for pair in answers for r in pair)
    assert all(sorted(r.json()["duplicate"] for r in pair) == [False, True] for pair in answers)
    settle(stack, ids)  # the applier merges what the two receivers stored
    client = stack.client()
    for job_id in ids:
        completions = [e for e in client.events(job_id) if e["to"] == "completed"]
        assert len(completions) == 1, job_id
        deliveries = client.deliveries(job_id)
        assert [d["received_count"] for d in deliveries] == [2], job_id
    ledger(stack, ids, f"concurrent-duplicates/{stack.kind}").assert_clean()


def test_worker_killed_mid_submission_loses_nothing_and_pays_once(stack: Stack) -> None:
    # Every generate answer takes a while, so the kill lands while requests are in flight.
    start(stack, concurrency=4, SANDBOX_HANG_RATE="1", SANDBOX_HANG_SECONDS="0.3")
    ids = create_jobs(stack, prefix="killed")
    wait_until(lambda: stack.sandbox("stats")["generate_calls"] >= 20, 60, "20 submissions")
    stack.stop("worker", signal.SIGKILL)
    killed_at = stack.sandbox("stats")["generate_calls"]
    time.sleep(1)
    stack.start_worker(name="worker", concurrency=4)
    settle(stack, ids, timeout=150)

    effective, retried = operator_settles_stranded(
        stack, ids, f"worker-killed/{stack.kind}", at_most=4
    )
    print(f"worker killed after {killed_at} generate calls; operator retried {retried}")
    ledger(stack, effective, f"worker-killed-after-operator/{stack.kind}").assert_clean()


def test_upstream_failures_and_expiring_sessions_still_complete_every_job(
    stack: Stack,
) -> None:
    start(
        stack,
        SANDBOX_FAILURE_RATE="0.33",
        SANDBOX_SESSION_TTL="2",
        SANDBOX_CALLBACK_FORMAT="form-bare",
        SANDBOX_SEED="7",
    )
    ids = create_jobs(stack, prefix="flaky")
    for _ in range(3):
        time.sleep(1.5)
        stack.sandbox("expire-sessions", {})
    settle(stack, ids, timeout=150)
    ledger(stack, ids, f"upstream-failures/{stack.kind}").assert_clean()
    stats = stack.sandbox("stats")
    assert stats["sessions"]["expired_rejections"] > 0 and stats["sessions"]["issued"] > 1


def _database_admin(stack: Stack) -> tuple[Any, str]:
    assert stack.postgres_server
    name = make_url(stack.env["DATABASE_URL"]).database
    assert name
    return create_engine(stack.postgres_server, isolation_level="AUTOCOMMIT"), name


def _cut_connections(admin: Any, name: str) -> None:
    with admin.connect() as connection:
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        )


def test_database_connections_cut_mid_run_lose_no_acknowledged_delivery(
    postgres_stack: Stack,
) -> None:
    stack = postgres_stack
    start(stack)
    admin, name = _database_admin(stack)
    ids = create_jobs(stack, prefix="cut")

    for _ in range(6):  # connections cut while deliveries and tasks are under way
        time.sleep(0.4)
        _cut_connections(admin, name)

    with admin.connect() as connection:  # then the database away for a while
        connection.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
    _cut_connections(admin, name)
    try:
        secret = stack.env["CALLBACK_SECRET"].split(",")[0]
        url = f"{stack.url}/callbacks/{ids[0]}/{callback_token(secret, ids[0])}"
        started = time.monotonic()
        answer = requests.post(
            url,
            data=json.dumps({"uuid": "x"}),
            timeout=10,
            headers={"Content-Type": "application/json"},
        )
        took = time.monotonic() - started
        ready = requests.get(f"{stack.url}/readyz", timeout=10)
        time.sleep(2)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
        admin.dispose()
    print(f"receiver answered {answer.status_code} in {took:.3f}s while the database was away")
    assert answer.status_code == 503 and took < 1.5
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"].startswith("unreachable")

    settle(stack, ids, timeout=150)
    effective, retried = operator_settles_stranded(stack, ids, "connections-cut/postgres", 4)
    print(f"operator retried {retried} claims whose commit was cut")
    ledger(stack, effective, "connections-cut-after-operator/postgres").assert_clean()
    every = sorted(set(ids) | set(effective))
    stored, acknowledged = deliveries_stored(stack, every), callbacks_acknowledged(stack)
    print(f"deliveries acknowledged={acknowledged} stored={stored}")
    assert stored >= acknowledged


def test_applier_killed_mid_batch_leaves_every_delivery_to_the_next(postgres_stack: Stack) -> None:
    stack = postgres_stack
    # No polls: only the stored deliveries can complete the jobs.
    stack.env.update({**FAST_RECOVERY, "CALLBACK_OVERDUE_AFTER": "600", "APPLY_SWEEP_AFTER": "5"})
    stack.start_all(SANDBOX_PREVIEW_DELAY="6", SANDBOX_FINAL_DELAY="7")
    ids = create_jobs(stack, prefix="applier")
    wait_until(
        lambda: all(
            j and j["status"] not in ("queued", "submitting") for j in fetch(stack, ids).values()
        ),
        90,
        "every job submitted",
    )
    admin, name = _database_admin(stack)
    database = create_engine(stack.env["DATABASE_URL"])
    holder = database.connect()
    holding = holder.begin()
    # Every job held (as a long writer would), yet not against the receiver's key-share lock:
    # deliveries are stored, and the applier's batch stops at locking its jobs.
    holder.execute(
        text("SELECT id FROM jobs WHERE public_id = ANY(:ids) FOR NO KEY UPDATE"), {"ids": ids}
    )
    try:

        def applier_mid_batch() -> bool:
            with admin.connect() as connection:
                waiting = connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = :name "
                        "AND wait_event_type = 'Lock' "
                        "AND query LIKE 'WITH claimed AS %FOR NO KEY UPDATE%'"
                    ),
                    {"name": name},
                ).scalar_one()
            with database.connect() as connection:
                pending = connection.execute(
                    text("SELECT count(*) FROM deliveries WHERE outcome = 'pending'")
                ).scalar_one()
            return bool(waiting) and pending >= 50

        wait_until(applier_mid_batch, 60, "the applier waiting mid-batch")
        stack.stop("worker", signal.SIGKILL)
    finally:
        holding.rollback()
        holder.close()
        database.dispose()
    time.sleep(1)
    stack.start_worker(name="worker")
    settle(stack, ids, timeout=150)

    result = ledger(stack, ids, f"applier-killed/{stack.kind}")
    result.assert_clean()
    client = stack.client()
    for job_id in ids:
        completions = [e for e in client.events(job_id) if e["to"] == "completed"]
        assert [e["source"] for e in completions] == ["callback"], job_id
        assert all(d["outcome"] != "pending" for d in client.deliveries(job_id)), job_id
    assert deliveries_stored(stack, ids) == callbacks_acknowledged(stack)
    admin.dispose()
