"""Jobs on a running service: submit (one, or a file of them), list, show, refresh, retry."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from webhook_app.states import JobStatus
from webhook_app.tools.cli.common import api_call, connect, json_option, summary, with_connection

STATUSES = [status.value for status in JobStatus]


@click.command()
@click.argument("prompt", required=False)
@click.option(
    "--from",
    "from_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Submit every request in a file: one prompt a line, or .csv / .jsonl with "
    "prompt, aspect_ratio, medium, metadata columns.",
)
@click.option("--aspect-ratio", default=None, help="1:1 2:3 3:2 3:4 4:3 4:5 5:4 9:16 16:9")
@click.option("--medium", type=click.Choice(["art", "photography"]), default=None)
@click.option("--metadata", default=None, help="A JSON object stored with the job.")
@click.option(
    "--idempotency-key", default=None, help="With --from, each line's key is KEY-<line number>."
)
@click.option("--wait", is_flag=True, help="Wait until the job is completed, failed or timed out.")
@click.option("--timeout", type=float, default=600, show_default=True, help="Seconds to wait.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the job (or, with --from, all) as JSON."
)
@with_connection
def submit(
    prompt: str | None,
    from_file: Path | None,
    aspect_ratio: str | None,
    medium: str | None,
    metadata: str | None,
    idempotency_key: str | None,
    wait: bool,
    timeout: float,
    as_json: bool,
    url: str | None,
    token: str | None,
) -> None:
    """Create a job from PROMPT, or one job per line with --from (and optionally wait)."""
    if (prompt is None) == (from_file is None):
        raise click.UsageError("give either a PROMPT or --from FILE")
    meta = json_option("--metadata", metadata)
    client = connect(url, token)
    if from_file is not None:
        defaults = {"aspect_ratio": aspect_ratio, "medium": medium, "metadata": meta}
        ok = api_call(
            lambda: _submit_batch(
                client, from_file, defaults, idempotency_key, wait, timeout, as_json
            )
        )
        sys.exit(0 if ok else 1)
    assert prompt is not None
    job = api_call(
        lambda: client.create_job(
            prompt,
            aspect_ratio=aspect_ratio,
            medium=medium,
            metadata=meta,
            idempotency_key=idempotency_key,
        )
    )
    if wait:
        if not as_json:
            click.echo(f"{job['id']}  {job['status']}  waiting...", err=True)
        job = api_call(lambda: client.wait(job["id"], timeout=timeout))
    click.echo(json.dumps(job, indent=2) if as_json else summary(job))
    if wait and job["status"] != "completed":
        sys.exit(1)


@click.command("jobs")
@click.option("--status", type=click.Choice(STATUSES), default=None)
@click.option("--created-after", default=None, help="ISO-8601 timestamp.")
@click.option("--q", default=None, help="Only jobs whose prompt contains this text.")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--cursor", default=None, help="The next page, as printed after the previous one.")
@click.option("--json", "as_json", is_flag=True)
@with_connection
def list_jobs(
    status: str | None,
    created_after: str | None,
    q: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
    url: str | None,
    token: str | None,
) -> None:
    """List jobs, newest first, with the API's filters."""
    from webhook_app.tools.batch import JOB_COLUMNS, job_row, table

    client = connect(url, token)
    page = api_call(
        lambda: client.list_jobs(
            status=status, created_after=created_after, q=q, limit=limit, cursor=cursor
        )
    )
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    if page["jobs"]:
        click.echo(table(JOB_COLUMNS, [job_row(job) for job in page["jobs"]]))
    else:
        click.echo("no jobs")
    if page.get("next_cursor"):
        click.echo(f"(more: --cursor {page['next_cursor']})")


@click.command("job")
@click.argument("job_id")
@click.option("--events", is_flag=True, help="Also show the job's events.")
@with_connection
def show_job(job_id: str, events: bool, url: str | None, token: str | None) -> None:
    """Show one job as JSON."""
    client = connect(url, token)
    job = api_call(lambda: client.get_job(job_id))
    if events:
        job["events"] = api_call(lambda: client.events(job_id))
    click.echo(json.dumps(job, indent=2))


@click.command("refresh")
@click.argument("job_id")
@with_connection
def refresh_job(job_id: str, url: str | None, token: str | None) -> None:
    """Ask the upstream about a job now."""
    client = connect(url, token)
    click.echo(summary(api_call(lambda: client.refresh(job_id))))


@click.command("retry")
@click.argument("job_id")
@with_connection
def retry_job(job_id: str, url: str | None, token: str | None) -> None:
    """Submit a failed or timed-out job's request again, as a new linked job."""
    client = connect(url, token)
    click.echo(summary(api_call(lambda: client.retry(job_id))))


@click.command("cancel")
@click.argument("job_id")
@click.option("--reason", default=None)
@with_connection
def cancel_job(job_id: str, reason: str | None, url: str | None, token: str | None) -> None:
    """Fail a job that the upstream has not accepted."""
    client = connect(url, token)
    click.echo(summary(api_call(lambda: client.cancel(job_id, reason=reason))))


def _submit_batch(
    client: Any,
    path: Path,
    defaults: dict[str, Any],
    idempotency_key: str | None,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> bool:
    """Submit every line of the file, optionally wait for them; True when all went well."""
    from webhook_app.tools.batch import BatchFileError, Outcome, outcomes_table, read_batch, tally
    from webhook_app.tools.client import Conflict, InvalidRequest

    try:
        lines = read_batch(path)
    except BatchFileError as exc:
        raise click.UsageError(str(exc)) from None
    outcomes = []
    with click.progressbar(lines, label="Submitting", file=sys.stderr, show_pos=True) as bar:
        for line in bar:
            fields = {**{k: v for k, v in defaults.items() if v is not None}, **line.request}
            key = f"{idempotency_key}-{line.number}" if idempotency_key else None
            try:
                job = client.create_job(fields.pop("prompt"), idempotency_key=key, **fields)
            except (InvalidRequest, Conflict) as exc:  # this line's fault: go on with the rest
                error = exc.body.get("error") if isinstance(exc.body, dict) else None
                outcomes.append(Outcome(line, error=error or {"message": str(exc)}))
            else:
                outcomes.append(Outcome(line, job=job))
    if wait:
        deadline = time.monotonic() + timeout
        submitted = [o for o in outcomes if o.job]
        with click.progressbar(
            length=len(submitted), label="Waiting   ", file=sys.stderr, show_pos=True
        ) as bar:
            for outcome in submitted:
                assert outcome.job is not None
                job_id = outcome.job["id"]
                remaining = max(0.0, deadline - time.monotonic())
                outcome.job = client.wait(job_id, timeout=remaining)
                bar.update(1)
    if as_json:
        click.echo(json.dumps([o.as_json() for o in outcomes], indent=2))
    else:
        click.echo(outcomes_table(outcomes))
        click.echo(tally(outcomes))
    if wait:
        return all(o.job and o.job["status"] == "completed" for o in outcomes)
    return all(o.job and o.job["status"] not in ("failed", "timed_out") for o in outcomes)
