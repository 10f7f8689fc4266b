"""`webhook-app`: run the parts, run everything, and talk to a running service."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from webhook_app.serving import gunicorn_argv, worker_argv
from webhook_app.settings import Settings, SettingsError


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.UsageError(f"configuration: {exc}") from None


@click.group()
def main() -> None:
    """Order AI images from Depositphotos and track every job."""


# --- the parts ----------------------------------------------------------------------------


@main.command()
@click.option("--check", is_flag=True, help="Only check that models and migrations agree.")
def migrate(check: bool) -> None:
    """Bring the database schema up to date (alembic upgrade head)."""
    from webhook_app.migrate import check_schema, upgrade

    settings = _settings()
    if check:
        check_schema(settings.database_url)
        click.echo("schema matches the models")
    else:
        upgrade(settings.database_url)
        click.echo("database is at the latest migration")


@main.command()
@click.option("--host", default=None, help="Default 0.0.0.0 in production, 127.0.0.1 otherwise.")
@click.option("--port", type=int, default=None, help="Default $PORT, else 8000.")
@click.option("--workers", type=int, default=None, help="Default $WEB_CONCURRENCY, else 2.")
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the web app with gunicorn."""
    settings = _settings()
    host = host or ("127.0.0.1" if settings.is_development else "0.0.0.0")
    workers = workers or int(os.environ.get("WEB_CONCURRENCY") or 2)
    argv = gunicorn_argv(f"{host}:{port or settings.port}", workers)
    os.execv(sys.executable, argv)


@main.command()
@click.option(
    "--concurrency", "-c", type=int, default=None, help="Default $WORKER_CONCURRENCY, else 2."
)
def worker(concurrency: int | None) -> None:
    """Run a Celery worker: submissions, polls, enrichment."""
    from workers.celery_app import create_worker_app

    app = create_worker_app(_settings())
    concurrency = concurrency or int(os.environ.get("WORKER_CONCURRENCY") or 2)
    app.worker_main(worker_argv(concurrency))


@main.command()
def beat() -> None:
    """Run Celery beat: the periodic reconciliation."""
    from workers.celery_app import create_worker_app

    app = create_worker_app(_settings())
    schedule = Path(tempfile.gettempdir()) / f"webhook-app-beat-{os.getuid()}"
    app.start(["beat", "--loglevel=INFO", f"--schedule={schedule}"])


@main.command()
@click.option("--host", default="127.0.0.1")
@click.option("--port", type=int, default=None, help="Default $SANDBOX_PORT, else 8001.")
def sandbox(host: str, port: int | None) -> None:
    """Run the Depositphotos-compatible sandbox (knobs: SANDBOX_* variables)."""
    from webhook_app.sandbox import knobs_from_env
    from webhook_app.sandbox import serve as serve_sandbox
    from webhook_app.settings import SANDBOX_PORT

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        knobs = knobs_from_env(os.environ)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    serve_sandbox(host, port or int(os.environ.get("SANDBOX_PORT") or SANDBOX_PORT), knobs)


@main.command()
@click.option("--port", type=int, default=None, help="Web port (default $PORT, else 8000).")
def run(port: int | None) -> None:
    """Migrate, then run web + worker + beat (+ the sandbox when DP_API_KEY is unset)."""
    from webhook_app.runner import run_everything

    sys.exit(run_everything(_settings(), port=port))


# --- talking to a running service ---------------------------------------------------------


def _client(url: str | None, token: str | None) -> Any:
    from webhook_app.client import Client

    url = (
        url
        or os.environ.get("WEBHOOK_APP_URL")
        or f"http://127.0.0.1:{os.environ.get('PORT') or 8000}"
    )
    token = token or os.environ.get("WEBHOOK_APP_TOKEN") or _first_api_token()
    return Client(url, token)


def _first_api_token() -> str:
    tokens = [t.strip() for t in os.environ.get("API_TOKENS", "").split(",") if t.strip()]
    return tokens[0] if tokens else "dev-token"


connection = [
    click.option(
        "--url", envvar="WEBHOOK_APP_URL", help="Service URL (default http://127.0.0.1:8000)."
    ),
    click.option(
        "--token", envvar="WEBHOOK_APP_TOKEN", help="API token (default: first of API_TOKENS)."
    ),
]


def with_connection(f: Any) -> Any:
    for option in reversed(connection):
        f = option(f)
    return f


def _api_call(call: Any) -> Any:
    from requests import RequestException

    from webhook_app.client import ApiError

    try:
        return call()
    except ApiError as exc:
        raise click.ClickException(str(exc)) from None
    except RequestException as exc:
        raise click.ClickException(f"cannot reach the service: {type(exc).__name__}") from None


def _summary(job: dict[str, Any]) -> str:
    items = job.get("items") or []
    ids = sum(1 for item in items if item.get("dp_item_id"))
    line = (
        f"{job['id']}  {job['status']:<10}  {len(items)} items ({ids} with dpItemId)  "
        f"{job['prompt'][:50]}"
    )
    if job.get("last_error"):
        line += (
            f"\n  last error: {job['last_error'].get('kind')}: {job['last_error'].get('message')}"
        )
    return line


@main.command()
@click.argument("prompt")
@click.option("--aspect-ratio", default=None, help="1:1 2:3 3:2 3:4 4:3 4:5 5:4 9:16 16:9")
@click.option("--medium", type=click.Choice(["art", "photography"]), default=None)
@click.option("--metadata", default=None, help="A JSON object stored with the job.")
@click.option("--idempotency-key", default=None)
@click.option("--wait", is_flag=True, help="Wait until the job is completed, failed or timed out.")
@click.option("--timeout", type=float, default=600, show_default=True, help="Seconds to wait.")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@with_connection
def submit(
    prompt: str,
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
    """Create a job (and optionally wait for it)."""
    try:
        meta = json.loads(metadata) if metadata else None
    except ValueError:
        raise click.BadParameter("must be JSON", param_hint="--metadata") from None
    client = _client(url, token)
    job = _api_call(
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
        job = _api_call(lambda: client.wait(job["id"], timeout=timeout))
    click.echo(json.dumps(job, indent=2) if as_json else _summary(job))
    if wait and job["status"] != "completed":
        sys.exit(1)


@main.command("jobs")
@click.option("--status", default=None)
@click.option("--created-after", default=None, help="ISO-8601 timestamp.")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@with_connection
def list_jobs(
    status: str | None,
    created_after: str | None,
    limit: int,
    as_json: bool,
    url: str | None,
    token: str | None,
) -> None:
    """List jobs, newest first."""
    client = _client(url, token)
    page = _api_call(
        lambda: client.list_jobs(status=status, created_after=created_after, limit=limit)
    )
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    for job in page["jobs"]:
        click.echo(_summary(job))
    if page.get("next_cursor"):
        click.echo(f"(more: --cursor {page['next_cursor']})")


@main.command("job")
@click.argument("job_id")
@click.option("--events", is_flag=True, help="Also show the job's events.")
@with_connection
def show_job(job_id: str, events: bool, url: str | None, token: str | None) -> None:
    """Show one job as JSON."""
    client = _client(url, token)
    job = _api_call(lambda: client.get_job(job_id))
    if events:
        job["events"] = _api_call(lambda: client.events(job_id))
    click.echo(json.dumps(job, indent=2))


@main.command("refresh")
@click.argument("job_id")
@with_connection
def refresh_job(job_id: str, url: str | None, token: str | None) -> None:
    """Ask the upstream about a job now."""
    client = _client(url, token)
    click.echo(_summary(_api_call(lambda: client.act(job_id, "refresh"))))


@main.command("retry")
@click.argument("job_id")
@with_connection
def retry_job(job_id: str, url: str | None, token: str | None) -> None:
    """Submit a failed or timed-out job's request again, as a new linked job."""
    client = _client(url, token)
    click.echo(_summary(_api_call(lambda: client.act(job_id, "retry"))))


@main.command("cancel")
@click.argument("job_id")
@click.option("--reason", default=None)
@with_connection
def cancel_job(job_id: str, reason: str | None, url: str | None, token: str | None) -> None:
    """Fail a job that the upstream has not accepted."""
    client = _client(url, token)
    body = {"reason": reason} if reason else {}
    click.echo(_summary(_api_call(lambda: client.act(job_id, "cancel", **body))))
