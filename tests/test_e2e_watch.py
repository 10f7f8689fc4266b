"""A tool watching its jobs through the changes feed, against the real processes: it sees
every job's every state it could see, ending with the last, and unchanged jobs cost it 304s."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
import requests

from webhook_app.states import JobStatus, rank
from webhook_app.tools.client import Client
from webhook_app.tools.stack import Stack, wait_until

pytestmark = pytest.mark.e2e

FAST = {"SANDBOX_PREVIEW_DELAY": "0.3", "SANDBOX_FINAL_DELAY": "0.8"}
JOBS = 6


def settled(client: Client, job_ids: list[str]) -> dict[str, Any] | None:
    """Every job completed, enriched and archived (nothing more will change), or None."""
    found = client.get_jobs(job_ids)["jobs"]
    done = all(
        job["status"] == "completed"
        and all(item["width"] for item in job["items"])
        and job.get("results_archived")
        for job in found
    )
    return {job["id"]: job for job in found} if done and len(found) == len(job_ids) else None


def test_a_tool_watching_the_feed_sees_every_job_to_its_last_change(stack: Stack) -> None:
    stack.start_all(**FAST)
    client = stack.client()
    team = {"team": uuid.uuid4().hex[:8]}
    start = client.changes("now")["next_cursor"]

    seen: list[dict[str, Any]] = []
    stop = threading.Event()

    def watch() -> None:
        watcher = stack.client()
        for job in watcher.watch(start, wait=1, stop=stop.is_set, metadata=team):
            seen.append(job)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    created = [client.create_job(f"watched {n}", metadata=team)["id"] for n in range(JOBS)]
    client.create_job("not watched", metadata={"team": "someone else"})
    assert client.wait(created[0], timeout=60)["status"] == "completed"
    final = wait_until(lambda: settled(client, created), 90, "every job settled")

    def caught_up() -> bool:
        last = {job["id"]: job["version"] for job in seen}
        return all(last.get(job_id) == final[job_id]["version"] for job_id in created)

    wait_until(caught_up, 30, "the watcher seeing every job's last version")
    stop.set()
    thread.join(5)

    assert {job["id"] for job in seen} == set(created)
    for job_id in created:
        mine = [job for job in seen if job["id"] == job_id]
        versions = [job["version"] for job in mine]
        assert versions == sorted(set(versions)), (job_id, versions)  # each change once, in order
        assert mine[-1] == final[job_id]
        ranks = [rank(JobStatus(job["status"])) for job in mine]
        assert ranks == sorted(ranks)  # never seen moving backward

    # Unchanged jobs answer 304: the client keeps the body it has.
    statuses: list[int] = []
    http = requests.Session()
    http.hooks["response"].append(lambda response, **_: statuses.append(response.status_code))
    conditional = Client(stack.url, stack.token, http=http, timeout=10)
    first = conditional.get_job(created[0])
    again = conditional.get_job(created[0])
    assert again == first and statuses == [200, 304]

    cli = stack.cli(
        "watch",
        "--changes",
        "--once",
        "--since",
        start,
        "--metadata",
        f'{{"team": "{team["team"]}"}}',
    )
    assert cli.returncode == 0, cli.stderr
    assert all(job_id in cli.stdout for job_id in created) and "someone else" not in cli.stdout
    assert "next cursor: " in cli.stderr
