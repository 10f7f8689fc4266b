"""The CLI for real work, against the whole system: a file of 20 prompts submitted with
progress bars and waited for, live counts, filtered listings, and the live answers checked
against the OpenAPI document."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.common.openapi_check import assert_conforms
from webhook_app.tools.stack import Stack

pytestmark = pytest.mark.e2e

FAST = {"SANDBOX_PREVIEW_DELAY": "0.3", "SANDBOX_FINAL_DELAY": "0.8"}


def run_on_a_terminal(stack: Stack, *args: str, timeout: float = 180) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal (so progress bars draw) and stdout piped."""
    env = {**stack.env, "WEBHOOK_APP_URL": stack.url, "WEBHOOK_APP_TOKEN": stack.token}
    env["COLUMNS"] = "100"
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook_app", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=follower,
        cwd=stack.workdir,
    )
    os.close(follower)
    terminal = b""
    while True:
        ready, _, _ = select.select([leader], [], [], timeout)
        if not ready:
            process.kill()
            raise AssertionError(f"no output for {timeout}s: {terminal[-500:]!r}")
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the other end closed: the process is done
            break
        if not chunk:
            break
        terminal += chunk
    assert process.stdout is not None
    stdout = process.stdout.read().decode()
    os.close(leader)
    return process.wait(timeout=30), stdout, terminal.decode(errors="replace")


def test_a_file_of_prompts_with_progress_a_table_and_an_exit_status(
    stack: Stack, tmp_path: Path
) -> None:
    stack.start_all(**FAST)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"a lighthouse at dawn, take {n}\n" for n in range(1, 21)))

    status, table, terminal = run_on_a_terminal(
        stack, "submit", "--from", str(prompts), "--wait", "--timeout", "150"
    )
    assert status == 0, terminal + table
    # The bars redraw in place as they advance, ending full.
    assert "Submitting  [" in terminal and "Waiting     [" in terminal
    assert terminal.count("\r") > 4 and "20/20" in terminal
    rows = [line.split() for line in table.splitlines()[2:22]]
    assert [row[0] for row in rows] == [str(n) for n in range(1, 21)]
    assert all(row[2:4] == ["completed", "4/4"] for row in rows)
    assert table.splitlines()[-1] == "20 lines: 20 completed"

    watch = stack.cli("watch", "--once", "--q", "lighthouse at dawn")
    assert watch.returncode == 0 and "completed=20" in watch.stdout and "total=20" in watch.stdout
    listing = stack.cli("jobs", "--q", "TAKE 1", "--status", "completed", "--limit", "5")
    lines = listing.stdout.splitlines()
    assert listing.returncode == 0 and len(lines) == 2 + 5 + 1 and "--cursor" in lines[-1]
    assert "take 19" in lines[2]  # newest first: takes 19..10 and 1 contain "take 1"

    check_live_answers_against_the_document(stack, rows[0][1])

    # A failed job or a refused line makes the exit status non-zero; --json is for scripts.
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        '{"prompt": "a kite", "aspect_ratio": "16:9", "metadata": {"row": 1}}\n'
        '{"prompt": "a harbour [sandbox:fail]"}\n'
        '{"prompt": "an owl", "medium": "oil paint"}\n'
    )
    result = stack.cli("submit", "--from", str(jobs), "--wait", "--json", "--timeout", "90")
    assert result.returncode == 1, result.stderr
    outcomes = json.loads(result.stdout)
    assert [o["line"] for o in outcomes] == [1, 2, 3]
    assert outcomes[0]["job"]["status"] == "completed"
    assert outcomes[0]["job"]["metadata"] == {"row": 1}
    assert outcomes[1]["job"]["status"] == "failed"
    assert outcomes[2]["error"]["field"] == "medium"
    unreadable = tmp_path / "bad.csv"
    unreadable.write_text("title\nx\n")
    refused = stack.cli("submit", "--from", str(unreadable))
    assert refused.returncode == 2 and "header must name a prompt column" in refused.stderr


def check_live_answers_against_the_document(stack: Stack, job_id: str) -> None:
    spec = requests.get(f"{stack.url}/api/v1/openapi.json", timeout=10).json()
    auth = {"Authorization": f"Bearer {stack.token}"}

    def check(template: str, path: str, **params: Any) -> Any:
        response = requests.get(f"{stack.url}{path}", headers=auth, params=params, timeout=30)
        body = response.json()
        assert_conforms(spec, "get", template, response.status_code, body, response.headers)
        return body

    job = check("/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}", wait="5")
    assert job["status"] == "completed" and all(item["dp_item_id"] for item in job["items"])
    check("/api/v1/jobs/{job_id}/events", f"/api/v1/jobs/{job_id}/events")
    check("/api/v1/jobs/{job_id}/deliveries", f"/api/v1/jobs/{job_id}/deliveries")
    check("/api/v1/jobs", "/api/v1/jobs", limit="200")
    check("/api/v1/stats", "/api/v1/stats")
