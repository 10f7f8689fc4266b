"""Results that last and reach the people waiting, end to end: real gunicorn, Celery workers,
beat and the sandbox. The job's images outlive the upstream's previews, a signed notification
reaches a subscriber, another service's hook task runs, and /metrics counts it all."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks import Webhook

from tests.common.subscriber import Subscriber
from webhook_app.tools.stack import Stack, wait_until

pytestmark = pytest.mark.e2e

FAST = {"SANDBOX_PREVIEW_DELAY": "0.3", "SANDBOX_FINAL_DELAY": "0.8"}
ROOT = Path(__file__).parent.parent
HOOK_TASK = "tests.on_job_done"  # what tests/common/hook_worker.py runs
HOOK_WORKER = [
    *("-m", "celery", "-A", "tests.common.hook_worker", "worker", "--pool=solo", "--loglevel=INFO"),
    *("--without-gossip", "--without-mingle", "--without-heartbeat"),
]


def metric(stack: Stack, name: str, **labels: str) -> float:
    text = requests.get(f"{stack.url}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def start_hook_service(stack: Stack, queue: str, output: Path) -> None:
    log = open(stack.workdir / "hook-worker.log", "ab")  # noqa: SIM115 - closed below
    stack.processes["worker-hook"] = subprocess.Popen(
        [sys.executable, *HOOK_WORKER],
        env={
            **stack.env,
            "HOOK_QUEUE": queue,
            "HOOK_OUTPUT": str(output),
            "PYTHONPATH": str(ROOT),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=stack.workdir,
    )
    log.close()


def test_results_are_kept_announced_handed_over_and_counted(stack: Stack) -> None:
    hook_queue, hook_output = f"hooks-{secrets.token_hex(4)}", stack.workdir / "hooked"
    hook_output.mkdir()
    (stack.workdir / "metrics").mkdir()
    stack.env.update(
        PROMETHEUS_MULTIPROC_DIR=str(stack.workdir / "metrics"),  # web and worker share it
        ARCHIVE_DIR=str(stack.workdir / "archive"),
        ON_JOB_DONE_TASK=HOOK_TASK,
        ON_JOB_DONE_QUEUE=hook_queue,
        LOG_FORMAT="json",
    )
    subscriber = Subscriber()
    try:
        start_hook_service(stack, hook_queue, hook_output)
        stack.start_all(**FAST)
        run_the_story(stack, subscriber, hook_output)
    finally:
        # First, so that no other consumer holds the server-less broker while ours stops.
        stack.stop("worker-hook")
        subscriber.close()


def run_the_story(stack: Stack, subscriber: Subscriber, hook_output: Path) -> None:
    created = stack.cli("subscriptions", "create", subscriber.url, "--status", "completed")
    assert created.returncode == 0, created.stderr
    secret = json.loads(created.stdout)["secret"]

    request_id = f"e2e-{secrets.token_hex(6)}"
    response = requests.post(
        f"{stack.url}/api/v1/jobs",
        json={"prompt": "a lighthouse at dawn", "metadata": {"order": 7}},
        headers={"Authorization": f"Bearer {stack.token}", "X-Request-ID": request_id},
        timeout=10,
    )
    assert response.status_code == 202 and response.headers["X-Request-ID"] == request_id
    job_id = response.json()["id"]
    client = stack.client()

    def kept() -> dict[str, Any] | None:
        job = client.get_job(job_id)
        done = job["status"] == "completed" and job["results_archived"]
        return job if done and all(item["width"] for item in job["items"]) else None

    job = wait_until(kept, 90, "the job completed with every image archived")
    assert len(job["items"]) == 4

    # The upstream forgets its previews; our copies stay.
    stack.sandbox("knobs", {"preview_ttl": 0.001})
    auth = {"Authorization": f"Bearer {stack.token}"}
    for item in job["items"]:
        assert requests.get(item["preview_url"], timeout=5).status_code == 410
        assert item["image_url"] == item["archive"]["url"] != item["preview_url"]
        image = requests.get(stack.url + item["image_url"], headers=auth, timeout=5)
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG\r\n\x1a\n")
        assert hashlib.sha256(image.content).hexdigest() == item["archive"]["sha256"]
        again = requests.get(
            stack.url + item["image_url"],
            headers={**auth, "If-None-Match": image.headers["ETag"]},
            timeout=5,
        )
        assert again.status_code == 304

    (received,) = subscriber.wait_for(1, timeout=60)
    payload = Webhook(secret).verify(received.body, received.headers)
    assert payload["type"] == "job.completed" and payload["data"]["id"] == job_id
    assert payload["data"]["metadata"] == {"order": 7}
    announced = payload["data"]["items"][0]["image_url"]
    assert announced.startswith(stack.url)
    assert requests.get(announced, headers=auth, timeout=5).status_code == 200

    hooked = wait_until(
        lambda: (hook_output / f"{job_id}.json").exists(), 60, "the hook task of another service"
    )
    assert hooked
    handed = json.loads((hook_output / f"{job_id}.json").read_text())
    assert handed["status"] == "completed" and len(handed["items"]) == 4

    # The subscriber answered; the attempt is recorded just after.
    wait_until(lambda: client.notifications(job_id=job_id, state="delivered"), 30, "delivered")
    listing = stack.cli("notifications", "list", "--job", job_id)
    assert listing.returncode == 0 and "delivered" in listing.stdout, listing.stderr

    # The web's /metrics adds up its own processes and the worker's (a shared directory).
    wait_until(
        lambda: metric(stack, "webhook_app_job_duration_seconds_count", status="completed"),
        30,
        "the job's duration in /metrics",
    )
    assert metric(stack, "webhook_app_jobs", status="completed") == 1
    assert metric(stack, "webhook_app_item_archives", state="archived") == 4
    assert metric(stack, "webhook_app_notifications", state="delivered") == 1
    assert metric(stack, "webhook_app_callbacks_total", outcome="stored") >= 2
    assert metric(stack, "webhook_app_deliveries_applied_total", outcome="applied") >= 2
    generate = {"command": "imageGenerator.generate", "outcome": "success"}
    assert metric(stack, "webhook_app_upstream_calls_total", **generate) == 1
    assert metric(stack, "webhook_app_task_queue_lag_seconds_count", task="webhook_app.submit_job")
    assert metric(stack, "webhook_app_job_done_hooks_total") == 1

    # The request id of the POST is on the log lines of the task it caused.
    lines = [
        json.loads(x)
        for x in (stack.workdir / "worker.log").read_text().splitlines()
        if x.startswith("{")
    ]
    submitted = [x for x in lines if x.get("request_id") == request_id]
    assert {x.get("task") for x in submitted} >= {"webhook_app.submit_job"}
    assert any(x.get("command") == "imageGenerator.generate" for x in submitted)
    assert all(x.get("job_id") == job_id for x in submitted if "command" in x)
    assert os.listdir(stack.workdir / "metrics")
