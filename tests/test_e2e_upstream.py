"""The upstream as it really is, with real processes on PostgreSQL and Redis: its own error
names, credentials refused for a while, sessions that expire, a rate it enforces, and the
budgets that keep generations from being paid for beyond what was allowed."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import requests
from celery import Celery

from tests.common.chaos import FAST_RECOVERY, QUICK_SANDBOX, create_jobs, fetch, ledger, settle
from webhook_app.infra.queue import CREATE_JOB
from webhook_app.tools.client import Client, OverBudget
from webhook_app.tools.stack import Stack, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def upstream_calls(stack: Stack) -> int:
    return sum(stack.sandbox("stats")["calls"].values())


def test_refused_credentials_pause_submissions_until_they_are_accepted_again(
    postgres_stack: Stack,
) -> None:
    stack = postgres_stack
    stack.env.update(
        FAST_RECOVERY, CREDENTIALS_PROBE_INTERVAL="1", CREDENTIALS_PROBE_MAX_INTERVAL="4"
    )
    stack.start_all(**QUICK_SANDBOX)
    stack.sandbox("knobs", {"api_key": "a-key-being-rotated"})  # ours is refused from now on
    before, started = upstream_calls(stack), time.monotonic()

    job_ids: list[str] = []
    for wave in range(4):  # jobs keep arriving while the key is refused
        job_ids += create_jobs(stack, 5, prefix=f"refused-{wave}")
        time.sleep(3.5)

    def every_job_says_why() -> dict[str, Any] | None:
        # The last wave's jobs say so once a worker has taken their submission.
        jobs = fetch(stack, job_ids)
        return jobs if all(job and job["last_error"] for job in jobs.values()) else None

    left = 20 - (time.monotonic() - started)
    waiting = wait_until(every_job_says_why, max(6.0, left), "every waiting job to say why")
    ready = requests.get(f"{stack.url}/readyz", timeout=10)
    paused = stack.client().upstream()
    time.sleep(max(0.0, 20 - (time.monotonic() - started)))
    calls_meanwhile = upstream_calls(stack) - before
    print(f"upstream calls while the key was refused for 20 s: {calls_meanwhile}")
    stack.sandbox("knobs", {"api_key": None})  # accepted again
    settle(stack, job_ids, timeout=60)

    assert all(job and job["status"] == "queued" for job in waiting.values()), waiting
    assert {job["last_error"]["kind"] for job in waiting.values() if job} == {"credentials_refused"}
    assert ready.status_code == 200
    assert ready.json()["checks"]["upstream"].startswith("degraded: credentials refused")
    assert paused["paused"] and paused["reason"]["exception"] == "EAPI\\EIllegalApiKey"
    # The first refusals, then one probe at a time, further and further apart.
    assert calls_meanwhile <= 12, calls_meanwhile
    ledger(stack, job_ids, "credentials refused for 20 s").assert_clean()
    assert not stack.client().upstream()["paused"]
    log = (stack.workdir / "worker.log").read_text()
    assert log.count("submissions paused until a probe succeeds") == 1
    assert log.count("waiting jobs resume") == 1


def test_sessions_expiring_every_few_seconds_are_renewed_without_failing_a_job(
    postgres_stack: Stack,
) -> None:
    stack = postgres_stack
    stack.env.update(FAST_RECOVERY)
    stack.start_all(**QUICK_SANDBOX, SANDBOX_SESSION_TTL="2")

    job_ids: list[str] = []
    for wave in range(4):
        job_ids += create_jobs(stack, 5, prefix=f"sessions-{wave}")
        time.sleep(2.5)
    settle(stack, job_ids, timeout=60)

    ledger(stack, job_ids, "sessions expire every 2 s").assert_clean()
    sessions = stack.sandbox("stats")["sessions"]
    assert sessions["expired_rejections"] >= 1 and sessions["issued"] >= 2, sessions


def test_an_upstream_that_refuses_calls_above_its_rate_is_paced_by_every_worker(
    postgres_stack: Stack,
) -> None:
    stack = postgres_stack
    stack.env.update(FAST_RECOVERY, UPSTREAM_RATE_LIMIT="5", UPSTREAM_RATE_LIMITED_PAUSE="1")
    stack.start_sandbox(**QUICK_SANDBOX, SANDBOX_RATE_LIMIT="6")
    stack.migrate()
    stack.start_web()
    stack.start_worker("worker", concurrency=2)
    stack.start_worker("worker-2", concurrency=2)  # two processes of workers share one pace
    stack.start_beat()

    job_ids = create_jobs(stack, 20, prefix="paced")  # all at once
    settle(stack, job_ids, timeout=90)

    ledger(stack, job_ids, "upstream refuses above 6 calls a second").assert_clean()
    refused = stack.sandbox("stats")["rate_limited"]
    print(f"calls refused as too many: {refused}")
    assert refused <= 3


def test_budgets_refuse_the_request_over_the_limit_and_nothing_is_sent(
    postgres_stack: Stack,
) -> None:
    stack = postgres_stack
    stack.env.update(FAST_RECOVERY, DAILY_GENERATION_BUDGET="4")
    stack.start_all(**QUICK_SANDBOX)
    made = stack.cli(
        "tokens", "create", "--name", "team-a", "--scope", "write", "--daily-limit", "1"
    )
    assert made.returncode == 0, made.stderr
    team = Client(stack.url, made.stdout.strip(), timeout=10)
    client = stack.client()

    by_team = team.create_job("the team's one generation")
    with pytest.raises(OverBudget) as team_refused:
        team.create_job("the team's second")
    settle(stack, [by_team["id"]], timeout=30)  # logged in by now
    logins = stack.sandbox("stats")["calls"]["login"]
    not_allowed = client.create_job("a fox [sandbox:not-allowed]")
    settle(stack, [not_allowed["id"]], timeout=30)
    logins_after_refusal = stack.sandbox("stats")["calls"]["login"]
    ours = [client.create_job(f"budgeted {n}")["id"] for n in range(2)]
    over = requests.post(
        f"{stack.url}/api/v1/jobs",
        json={"prompt": "one too many"},
        headers={"Authorization": f"Bearer {stack.token}"},
        timeout=10,
    )
    Celery(broker=stack.env["CELERY_BROKER_URL"]).send_task(
        CREATE_JOB, kwargs={"prompt": "from another service"}, queue=stack.env["CELERY_QUEUE"]
    )
    job_ids = [by_team["id"], not_allowed["id"], *ours]
    settle(stack, job_ids, timeout=60)
    wait_until(
        lambda: "BudgetExceeded" in (stack.workdir / "worker.log").read_text(),
        30,
        "the Celery task refused over budget",
    )

    assert team_refused.value.status == 429 and team_refused.value.budget == "token"
    assert over.status_code == 429 and int(over.headers["Retry-After"]) > 0
    assert over.json()["error"]["budget"] == "deployment"
    jobs = fetch(stack, job_ids)
    rejected = jobs[not_allowed["id"]]
    assert rejected is not None and rejected["status"] == "failed"
    assert rejected["last_error"]["kind"] == "validation"
    assert rejected["last_error"]["exception"] == "EAPI\\EValueNotAllowed"
    assert all(jobs[i]["status"] == "completed" for i in (by_team["id"], *ours))  # type: ignore[index]
    assert client.stats()["total"] == 4  # nothing created over the budget, by HTTP or task
    stats = stack.sandbox("stats")
    assert stats["generations"] == 3 and stats["generate_calls"] == 4
    assert logins_after_refusal == logins  # a value not allowed is not answered with a login
    usage = stack.cli("usage")
    assert usage.returncode == 0 and "4 used today  (limit 4)" in usage.stdout, usage.stdout
    listed = stack.cli("tokens", "list")
    assert "1/1" in listed.stdout and "team-a" in listed.stdout


def test_a_follow_up_the_upstream_refuses_is_retried_alone(postgres_stack: Stack) -> None:
    """A completed job's media data and finished-job hook travel in one message; the
    upstream refuses the lookups above its rate, and only they are tried again."""
    stack = postgres_stack
    # No pace of our own: the upstream's refusals reach the tasks.
    stack.env.update(FAST_RECOVERY, UPSTREAM_RATE_LIMIT="0", UPSTREAM_RATE_LIMITED_PAUSE="0.5")
    stack.start_sandbox(**QUICK_SANDBOX, SANDBOX_RATE_LIMIT="2")
    stack.migrate()
    stack.start_web()
    stack.start_worker()
    stack.start_beat()

    (job_id,) = create_jobs(stack, 1, prefix="refused-lookups")

    def enriched() -> dict[str, Any] | None:
        job = stack.client().get_job(job_id)
        items = job["items"] if job["status"] == "completed" else []
        return job if items and all(item["width"] for item in items) else None

    job = wait_until(enriched, 60, "the completed job's media data")
    log = (stack.workdir / "worker.log").read_text()
    received = re.findall(r"Task (\S+)\[[^\]]+\] received", log)
    assert "webhook_app.enrich_job failed in a follow-up (RateLimited)" in log
    assert received.count("webhook_app.follow_up") == 1, received
    assert "webhook_app.enrich_job" in received  # the lookups, on their own
    assert "webhook_app.job_finished" not in received  # the hook ran once, in the follow-up
    assert len(job["items"]) == 4
