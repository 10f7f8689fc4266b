"""The service's processes: migrate, serve, worker, beat, sandbox, and run for all of them."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

import click

from webhook_app.tools.cli.common import load_settings, setting
from webhook_app.tools.serving import gunicorn_argv, worker_argv


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


@click.command()
@click.option("--check", is_flag=True, help="Only check that models and migrations agree.")
def migrate(check: bool) -> None:
    """Bring the database schema up to date (alembic upgrade head)."""
    from webhook_app.infra.migrate import check_schema, upgrade

    settings = load_settings()
    if check:
        check_schema(settings.database_url)
        click.echo("schema matches the models")
    else:
        upgrade(settings.database_url)
        click.echo("database is at the latest migration")


@click.command()
@click.option("--host", default=None, help="Default 0.0.0.0 in production, 127.0.0.1 otherwise.")
@click.option("--port", type=int, default=None, help="Default $PORT, else 8000.")
@click.option("--workers", type=int, default=None, help="Default $WEB_CONCURRENCY, else 2.")
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the web app with gunicorn."""
    settings = load_settings()
    host = host or ("127.0.0.1" if settings.is_development else "0.0.0.0")
    workers = workers or settings.web_concurrency
    argv = gunicorn_argv(f"{host}:{port or settings.port}", workers, settings.web_threads)
    share_metrics_dir()
    os.execv(sys.executable, argv)


@click.command()
@click.option(
    "--concurrency", "-c", type=int, default=None, help="Default $WORKER_CONCURRENCY, else 2."
)
def worker(concurrency: int | None) -> None:
    """Run a Celery worker: submissions, polls, enrichment."""
    share_metrics_dir()
    from webhook_app.infra.metrics import serve_worker_metrics
    from workers.celery_app import create_worker_app

    settings = load_settings()
    app = create_worker_app(settings)
    if settings.worker_metrics_port:
        serve_worker_metrics(settings.worker_metrics_port)
    concurrency = concurrency or settings.worker_concurrency
    app.worker_main(worker_argv(concurrency))


@click.command()
def beat() -> None:
    """Run Celery beat: the periodic reconciliation."""
    share_metrics_dir()
    from workers.celery_app import create_worker_app

    app = create_worker_app(load_settings())
    schedule = Path(tempfile.gettempdir()) / f"webhook-app-beat-{os.getuid()}"
    app.start(["beat", "--loglevel=INFO", f"--schedule={schedule}"])


@click.command()
@click.option("--host", default="127.0.0.1")
@click.option("--port", type=int, default=None, help="Default $SANDBOX_PORT, else 8001.")
def sandbox(host: str, port: int | None) -> None:
    """Run the Depositphotos-compatible sandbox (knobs: SANDBOX_* variables)."""
    from webhook_app.infra.redaction import install_redaction
    from webhook_app.sandbox import knobs_from_env
    from webhook_app.sandbox import serve as serve_sandbox

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    install_redaction()  # it logs callback URLs it could not reach: their tokens are masked
    try:
        knobs = knobs_from_env(os.environ)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    serve_sandbox(host, port or setting("SANDBOX_PORT"), knobs)


@click.command()
@click.option("--port", type=int, default=None, help="Web port (default $PORT, else 8000).")
def run(port: int | None) -> None:
    """Migrate, then run web + worker + beat (+ the sandbox when DP_API_KEY is unset)."""
    from webhook_app.tools.runner import run_everything

    sys.exit(run_everything(load_settings(), port=port))
