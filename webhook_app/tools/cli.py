"""`webhook-app`: run the parts, run everything, and talk to a running service."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import click

from webhook_app.settings import Settings, SettingsError
from webhook_app.states import TERMINAL, JobStatus
from webhook_app.tools.serving import gunicorn_argv, worker_argv

STATUSES = [status.value for status in JobStatus]


def share_metrics_dir() -> None:
    """Let this command's processes (gunicorn workers, Celery children) count into one place.

    Must run before prometheus_client is imported; an operator's PROMETHEUS_MULTIPROC_DIR
    (e.g. one directory shared by web and worker on one machine) is kept.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="webhook-app-metrics-")


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
    from webhook_app.infra.migrate import check_schema, upgrade

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
    argv = gunicorn_argv(f"{host}:{port or settings.port}", workers, settings.web_threads)
    share_metrics_dir()
    os.execv(sys.executable, argv)


@main.command()
@click.option(
    "--concurrency", "-c", type=int, default=None, help="Default $WORKER_CONCURRENCY, else 2."
)
def worker(concurrency: int | None) -> None:
    """Run a Celery worker: submissions, polls, enrichment."""
    share_metrics_dir()
    from webhook_app.infra.metrics import serve_worker_metrics
    from workers.celery_app import create_worker_app

    settings = _settings()
    app = create_worker_app(settings)
    if settings.worker_metrics_port:
        serve_worker_metrics(settings.worker_metrics_port)
    concurrency = concurrency or int(os.environ.get("WORKER_CONCURRENCY") or 2)
    app.worker_main(worker_argv(concurrency))


@main.command()
def beat() -> None:
    """Run Celery beat: the periodic reconciliation."""
    share_metrics_dir()
    from workers.celery_app import create_worker_app

    app = create_worker_app(_settings())
    schedule = Path(tempfile.gettempdir()) / f"webhook-app-beat-{os.getuid()}"
    app.start(["beat", "--loglevel=INFO", f"--schedule={schedule}"])


@main.command()
@click.option("--host", default="127.0.0.1")
@click.option("--port", type=int, default=None, help="Default $SANDBOX_PORT, else 8001.")
def sandbox(host: str, port: int | None) -> None:
    """Run the Depositphotos-compatible sandbox (knobs: SANDBOX_* variables)."""
    from webhook_app.infra.redaction import install_redaction
    from webhook_app.sandbox import knobs_from_env
    from webhook_app.sandbox import serve as serve_sandbox
    from webhook_app.settings import SANDBOX_PORT

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    install_redaction()  # it logs callback URLs it could not reach: their tokens are masked
    try:
        knobs = knobs_from_env(os.environ)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    serve_sandbox(host, port or int(os.environ.get("SANDBOX_PORT") or SANDBOX_PORT), knobs)


@main.command()
@click.option("--port", type=int, default=None, help="Web port (default $PORT, else 8000).")
def run(port: int | None) -> None:
    """Migrate, then run web + worker + beat (+ the sandbox when DP_API_KEY is unset)."""
    from webhook_app.tools.runner import run_everything

    sys.exit(run_everything(_settings(), port=port))


# --- talking to a running service ---------------------------------------------------------


def _client(url: str | None, token: str | None) -> Any:
    from webhook_app.tools.client import Client

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


def _json_option(name: str, raw: str | None) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise click.BadParameter("must be JSON", param_hint=name) from None


def _api_call(call: Any) -> Any:
    from requests import RequestException

    from webhook_app.tools.client import ApiError

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
    meta = _json_option("--metadata", metadata)
    client = _client(url, token)
    if from_file is not None:
        defaults = {"aspect_ratio": aspect_ratio, "medium": medium, "metadata": meta}
        ok = _api_call(
            lambda: _submit_batch(
                client, from_file, defaults, idempotency_key, wait, timeout, as_json
            )
        )
        sys.exit(0 if ok else 1)
    assert prompt is not None
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

    client = _client(url, token)
    page = _api_call(
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
    click.echo(_summary(_api_call(lambda: client.refresh(job_id))))


@main.command("retry")
@click.argument("job_id")
@with_connection
def retry_job(job_id: str, url: str | None, token: str | None) -> None:
    """Submit a failed or timed-out job's request again, as a new linked job."""
    client = _client(url, token)
    click.echo(_summary(_api_call(lambda: client.retry(job_id))))


@main.command("cancel")
@click.argument("job_id")
@click.option("--reason", default=None)
@with_connection
def cancel_job(job_id: str, reason: str | None, url: str | None, token: str | None) -> None:
    """Fail a job that the upstream has not accepted."""
    client = _client(url, token)
    click.echo(_summary(_api_call(lambda: client.cancel(job_id, reason=reason))))


# --- API tokens (an operator's action, straight on the database) ---------------------------


@contextmanager
def _database_session() -> Iterator[Any]:
    """One transaction on DATABASE_URL, for an operator's command."""
    from webhook_app.infra.db import Database

    db = Database(_settings().database_url)
    try:
        with db.transaction() as session:
            yield session
    finally:
        db.dispose()


@main.group()
def tokens() -> None:
    """Create, list and revoke query API tokens (stored only as hashes)."""


@tokens.command("create")
@click.option("--name", required=True, help="Who or what uses it, e.g. billing-service.")
@click.option(
    "--scope",
    type=click.Choice(["read", "write"]),
    default="read",
    show_default=True,
    help="read: GET only; write: also create and refresh jobs.",
)
@click.option(
    "--daily-limit",
    type=click.IntRange(min=0),
    default=None,
    help="Generations this token may create a day (UTC), within the deployment's budget.",
)
def create_token(name: str, scope: str, daily_limit: int | None) -> None:
    """Make a token and print it once; only its hash is kept."""
    from webhook_app.models import utcnow
    from webhook_app.services.api_tokens import create_token as create

    try:
        with _database_session() as session:
            row, token = create(
                session, name=name, scope=scope, now=utcnow(), daily_limit=daily_limit
            )
            token_id = row.id
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--name") from None
    limit = f", {daily_limit} generations a day" if daily_limit is not None else ""
    # The token alone on stdout, so that scripts can capture it.
    click.echo(
        f"token {token_id} ({name}, {scope}{limit}); shown only now, keep it safe:", err=True
    )
    click.echo(token)


@tokens.command("list")
def list_tokens() -> None:
    """Every token: id, scope, created, revoked, generations today/daily limit, name."""
    from webhook_app.models import utcnow
    from webhook_app.services import budgets
    from webhook_app.services.api_tokens import list_tokens as all_tokens

    with _database_session() as session:
        rows = all_tokens(session)
        names = [budgets.token_budget_name(row.id) for row in rows]
        used = budgets.used_today(session, names, now=utcnow())
        for row, budget in zip(rows, names, strict=True):
            state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
            limit = "-" if row.daily_limit is None else str(row.daily_limit)
            today = f"{used[budget]}/{limit}"
            click.echo(
                f"{row.id:>4}  {row.scope:<5}  {row.created_at:%Y-%m-%d %H:%M}  {state:<24}  "
                f"{today:>11}  {row.name}"
            )


@tokens.command("revoke")
@click.argument("token_id", type=int)
def revoke_token(token_id: int) -> None:
    """Revoke a token now: the next request that presents it gets 401."""
    from webhook_app.models import utcnow
    from webhook_app.services.api_tokens import revoke_token as revoke

    with _database_session() as session:
        row = revoke(session, token_id, now=utcnow())
        name = row.name if row else None
    if name is None:
        raise click.ClickException(f"no token {token_id}")
    click.echo(f"token {token_id} ({name}) is revoked")


# --- subscriptions and notifications -------------------------------------------------------


@main.group()
def subscriptions() -> None:
    """Who is told (Standard Webhooks) when a job finishes."""


@subscriptions.command("create")
@click.argument("endpoint", metavar="URL")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["completed", "failed", "timed_out"]),
    help="Only jobs that end so (repeatable; default: all three).",
)
@click.option("--metadata", default=None, help="Only jobs whose metadata holds this JSON object.")
@click.option("--description", default=None)
@with_connection
def create_subscription(
    endpoint: str,
    statuses: tuple[str, ...],
    metadata: str | None,
    description: str | None,
    **connection: str | None,
) -> None:
    """Subscribe URL; prints the signing secret, which is shown only this once."""
    meta = _json_option("--metadata", metadata)
    client = _client(connection["url"], connection["token"])
    created = _api_call(
        lambda: client.create_subscription(
            endpoint, statuses=list(statuses) or None, metadata=meta, description=description
        )
    )
    click.echo(json.dumps(created, indent=2))
    click.echo("Keep the secret: it is not shown again.", err=True)


@subscriptions.command("list")
@with_connection
def list_subscriptions(**connection: str | None) -> None:
    """List subscriptions (without their secrets)."""
    client = _client(connection["url"], connection["token"])
    for subscription in _api_call(client.subscriptions):
        filters = []
        if subscription.get("statuses"):
            filters.append("status in " + ",".join(subscription["statuses"]))
        if subscription.get("metadata"):
            filters.append("metadata " + json.dumps(subscription["metadata"]))
        click.echo(f"{subscription['id']}  {subscription['url']}  {'; '.join(filters) or 'all'}")


@subscriptions.command("delete")
@click.argument("subscription_id")
@with_connection
def delete_subscription(subscription_id: str, **connection: str | None) -> None:
    """Delete a subscription and its notifications."""
    client = _client(connection["url"], connection["token"])
    _api_call(lambda: client.delete_subscription(subscription_id))
    click.echo(f"deleted {subscription_id}")


@main.group()
def notifications() -> None:
    """Notifications sent to subscribers: list, show with attempts, replay."""


@notifications.command("list")
@click.option("--job", "job_id", default=None)
@click.option("--subscription", "subscription_id", default=None)
@click.option("--state", type=click.Choice(["pending", "delivered", "failed"]), default=None)
@with_connection
def list_notifications(
    job_id: str | None, subscription_id: str | None, state: str | None, **connection: str | None
) -> None:
    """List notifications, newest first."""
    client = _client(connection["url"], connection["token"])
    found = _api_call(
        lambda: client.notifications(job_id=job_id, subscription_id=subscription_id, state=state)
    )
    for n in found:
        error = f"  ({n['last_error']})" if n.get("last_error") else ""
        click.echo(
            f"{n['id']}  {n['type']:<14}  {n['state']:<9}  {n['attempts']} attempts  "
            f"job {n['job_id']}{error}"
        )


@notifications.command("show")
@click.argument("notification_id")
@with_connection
def show_notification(notification_id: str, **connection: str | None) -> None:
    """Show a notification with its payload and every attempt."""
    client = _client(connection["url"], connection["token"])
    click.echo(json.dumps(_api_call(lambda: client.notification(notification_id)), indent=2))


@notifications.command("replay")
@click.argument("notification_id")
@with_connection
def replay_notification(notification_id: str, **connection: str | None) -> None:
    """Send a notification again (same webhook-id, fresh signature and attempts)."""
    client = _client(connection["url"], connection["token"])
    replayed = _api_call(lambda: client.replay_notification(notification_id))
    click.echo(f"{replayed['id']}  {replayed['state']}  queued again")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON.")
@with_connection
def usage(as_json: bool, url: str | None, token: str | None) -> None:
    """Generations counted today against the daily budgets, and whether submissions wait."""
    client = _client(url, token)
    counted = _api_call(client.usage)
    upstream = _api_call(client.upstream)
    if as_json:
        click.echo(json.dumps({**counted, "upstream": upstream}, indent=2))
        return

    def line(label: str, budget: dict[str, Any]) -> str:
        limit = "no limit" if budget["limit"] is None else f"limit {budget['limit']}"
        return f"{label:<22} {budget['used']:>6} used today  ({limit})"

    click.echo(f"day {counted['day']} (UTC), budgets reset at {counted['resets_at']}")
    click.echo(line("deployment", counted["deployment"]))
    if counted["token"] is not None:
        click.echo(line(f"token {counted['token']['id']}", counted["token"]))
    if upstream["paused"]:
        click.echo(
            f"submissions paused since {upstream['since']}: the upstream refuses the "
            f"credentials; next probe at {upstream['next_probe_at']}"
        )
    else:
        click.echo("submissions: running")


@main.command()
@click.option(
    "--interval", type=float, default=2.0, show_default=True, help="Least seconds between looks."
)
@click.option("--once", is_flag=True, help="Print once and exit.")
@click.option("--until-idle", is_flag=True, help="Exit once no job is queued or in flight.")
@click.option("--created-after", default=None, help="Only jobs created after this ISO-8601 time.")
@click.option("--q", default=None, help="Only jobs whose prompt contains this text.")
@click.option(
    "--changes", "each_change", is_flag=True, help="Print each job as it changes, not counts."
)
@click.option("--status", default=None, help="With --changes: only jobs in this status.")
@click.option("--metadata", default=None, help="With --changes: a JSON object jobs must match.")
@click.option("--since", default="now", show_default=True, help="With --changes: a cursor, or 0.")
@with_connection
def watch(
    interval: float,
    once: bool,
    until_idle: bool,
    created_after: str | None,
    q: str | None,
    each_change: bool,
    status: str | None,
    metadata: str | None,
    since: str,
    url: str | None,
    token: str | None,
) -> None:
    """Live counts of jobs by status, or each change (Ctrl-C stops).

    Both follow the changes feed: the counts are read again only when a job has changed.
    """
    client = _client(url, token)
    filters = {"created_after": created_after, "q": q}
    if each_change:
        wanted = _json_option("--metadata", metadata)
        _print_changes(client, since, once, status=status, metadata=wanted, **filters)
        return
    redraw = sys.stdout.isatty() and not once
    cursor = None if once else _api_call(lambda: client.changes("now", **filters))["next_cursor"]
    while True:
        drawn = time.monotonic()
        stats = _api_call(lambda: client.stats(**filters))
        _draw_counts(stats, interval, redraw)
        running = sum(n for s, n in stats["jobs"].items() if s not in TERMINAL)
        if once or (until_idle and running == 0):
            return
        while True:  # held by the server until a job changes: one request per change or 25 s
            page = _api_call(partial(client.changes, cursor, wait=25, limit=1, **filters))
            if page["jobs"] or page["more"]:
                break
            cursor = page["next_cursor"]
        cursor = _api_call(lambda: client.changes("now", **filters))["next_cursor"]
        time.sleep(max(0.0, interval - (time.monotonic() - drawn)))


def _draw_counts(stats: Any, interval: float, redraw: bool) -> None:
    from webhook_app.tools.batch import table

    counts = stats["jobs"]
    now = time.strftime("%H:%M:%S")
    if redraw:
        click.clear()
        click.echo(f"jobs by status at {now}  (as they change, Ctrl-C stops)\n")
        rows = [(status, n, "#" * min(n, 50)) for status, n in counts.items()]
        click.echo(table(("status", "jobs", ""), [*rows, ("total", stats["total"], "")]))
    else:
        parts = "  ".join(f"{status}={n}" for status, n in counts.items())
        click.echo(f"{now}  {parts}  total={stats['total']}")


def _print_changes(client: Any, since: str, once: bool, **filters: Any) -> None:
    """One line per change: time, job, status, version, prompt."""

    def line(job: Any) -> str:
        at = time.strftime("%H:%M:%S")
        return f"{at}  {job['id']}  {job['status']:<10}  v{job['version']:<3}  {job['prompt'][:60]}"

    if once:
        page = _api_call(lambda: client.changes(since, limit=200, **filters))
        for job in page["jobs"]:
            click.echo(line(job))
        click.echo(f"next cursor: {page['next_cursor']}", err=True)
        return
    changes = client.watch(since, **filters)
    while True:
        job = _api_call(lambda: next(changes))
        click.echo(line(job))


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
