"""The ledger every chaos scenario ends with, and the helpers to drive a batch of jobs."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

from webhook_app.tools.stack import Stack, wait_until

JOBS = int(os.environ.get("CHAOS_JOBS", "100"))
TERMINAL = ("completed", "failed", "timed_out")

# Short clocks, so that reconciliation acts within seconds instead of minutes.
FAST_RECOVERY = {
    "RECONCILE_INTERVAL": "1",
    "CALLBACK_OVERDUE_AFTER": "3",
    "MAX_POLL_INTERVAL": "6",
    "SUBMISSION_STALE_AFTER": "8",
    "RESUBMIT_QUEUED_AFTER": "6",
    "RETRY_BACKOFF_BASE": "0.5",
    "RETRY_BACKOFF_MAX": "4",
    "JOB_DEADLINE": "600",
}
QUICK_SANDBOX = {"SANDBOX_PREVIEW_DELAY": "0.3", "SANDBOX_FINAL_DELAY": "0.8"}

# The running test's report properties: ledgers land there, and the summary prints them.
report_properties: list[tuple[str, object]] = []


def create_jobs(stack: Stack, count: int = JOBS, prefix: str = "chaos") -> list[str]:
    client = stack.client()

    def create(n: int) -> str:
        return str(client.create_job(f"{prefix} {n}", idempotency_key=f"{prefix}-{n}")["id"])

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(create, range(count)))


def fetch(stack: Stack, job_ids: list[str]) -> dict[str, dict[str, Any] | None]:
    client = stack.client()

    def get(job_id: str) -> dict[str, Any] | None:
        try:
            return client.get_job(job_id)
        except Exception as exc:  # a missing job is what the ledger counts as lost
            if getattr(exc, "status", None) == 404:
                return None
            raise

    with ThreadPoolExecutor(4) as pool:
        return dict(zip(job_ids, pool.map(get, job_ids), strict=True))


def settle(stack: Stack, job_ids: list[str], timeout: float = 120) -> None:
    """Wait until every job is terminal or waits for an operator (or the timeout passes; the
    ledger then says so)."""

    def all_terminal() -> bool:
        return all(
            job and (job["status"] in TERMINAL or job["submission"] == "unknown")
            for job in fetch(stack, job_ids).values()
        )

    # Running out of time is not an error here: the ledger names what did not finish.
    with contextlib.suppress(AssertionError):
        wait_until(all_terminal, timeout, "every job terminal", interval=1.0)


@dataclass
class Ledger:
    name: str
    jobs: int
    terminal: int
    completed: int
    lost: int
    generate_calls: int
    submitted_twice: list[str]
    never_submitted: list[str]
    results_missing: list[str]
    statuses: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        return (
            f"ledger[{self.name}]: jobs={self.jobs} terminal={self.terminal} "
            f"completed={self.completed} lost={self.lost} generate_calls={self.generate_calls} "
            f"submitted_twice={len(self.submitted_twice)} "
            f"never_submitted={len(self.never_submitted)} "
            f"results_missing={len(self.results_missing)} statuses={dict(self.statuses)}"
        )

    def assert_clean(self) -> None:
        """Every job terminal and completed with its result, none lost, each paid once."""
        assert self.lost == 0, self.line()
        assert self.terminal == self.jobs, self.line()
        assert self.completed == self.jobs, self.line()
        assert not self.submitted_twice, self.line()
        assert not self.never_submitted, self.line()
        assert self.generate_calls == self.jobs, self.line()
        assert not self.results_missing, self.line()


def generations_by_job(stack: Stack) -> Counter[str]:
    """How many generations the sandbox made for each job (its id is in the callback URL)."""
    counts: Counter[str] = Counter()
    for generation in stack.sandbox("generations"):
        url = generation.get("callback_url") or ""
        if "/callbacks/" in url:
            counts[url.split("/callbacks/")[1].split("/")[0]] += 1
    return counts


def ledger(stack: Stack, job_ids: list[str], name: str) -> Ledger:
    jobs = fetch(stack, job_ids)
    calls = generations_by_job(stack)
    found = {job_id: job for job_id, job in jobs.items() if job is not None}
    completed = [job for job in found.values() if job["status"] == "completed"]
    result = Ledger(
        name=name,
        jobs=len(job_ids),
        terminal=sum(job["status"] in TERMINAL for job in found.values()),
        completed=len(completed),
        lost=len(job_ids) - len(found),
        generate_calls=sum(calls[job_id] for job_id in job_ids),
        submitted_twice=[job_id for job_id in job_ids if calls[job_id] > 1],
        never_submitted=[job_id for job_id in job_ids if calls[job_id] == 0],
        results_missing=[
            job["id"]
            for job in completed
            if len(job["items"]) != 4
            or not all(item["dp_item_id"] and item["preview_url"] for item in job["items"])
        ],
        statuses=Counter(job["status"] for job in found.values()),
    )
    print(result.line())
    report_properties.append(("ledger", result.line()))
    return result


def final_state(job: dict[str, Any]) -> tuple[Any, ...]:
    """What a job ends as, independent of the path it took."""
    return (
        job["status"],
        job["upstream_status"],
        job["purchase_status"],
        tuple((bool(i["dp_item_id"]), bool(i["preview_url"])) for i in job["items"]),
    )


def callbacks_acknowledged(stack: Stack) -> int:
    """Callback messages the receiver answered 2xx, as the sandbox counted them."""
    return int(stack.sandbox("stats")["callbacks"]["sent"])


def deliveries_stored(stack: Stack, job_ids: list[str]) -> int:
    client = stack.client()
    return sum(d["received_count"] for job_id in job_ids for d in client.deliveries(job_id))


def post_raw(url: str, body: bytes) -> requests.Response:
    return requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10)


def operator_settles_stranded(
    stack: Stack, job_ids: list[str], name: str, at_most: int
) -> tuple[list[str], int]:
    """Play the operator for submissions whose outcome is unknown and that were never sent.

    A claim whose request never left (its worker died, or its database connection was cut
    around the commit) is visible as `submission: unknown` and was never paid for; the
    operator cancels and retries it. Returns the jobs that stand for the batch afterwards.
    """
    jobs = fetch(stack, job_ids)
    before = ledger(stack, job_ids, name)
    stranded = [
        job_id
        for job_id in before.never_submitted
        if (job := jobs[job_id]) and job["submission"] == "unknown"
    ]
    assert len(stranded) <= at_most, before.line()
    assert set(before.never_submitted) == set(stranded), before.line()
    client = stack.client()
    replaced = {}
    for job_id in stranded:
        client.cancel(job_id, reason="never sent: outcome of the claim unknown")
        replaced[job_id] = str(client.retry(job_id)["id"])
    effective = [replaced.get(job_id, job_id) for job_id in job_ids]
    settle(stack, effective)
    return effective, len(stranded)
