"""`python -m bench.profile`: where the hot paths spend their time, call tree by call tree.

The service's own code runs in this process, under pyinstrument, against a fresh PostgreSQL
database and the kit's Redis (its own queue, emptied after): the callback handler, get-one and
the list page through the real app (Flask's test client, so no HTTP server is measured), and
the submission task called directly against an in-process sandbox (whose own work counts in
that CPU figure). For each it prints the CPU time per call, inflated by the profiler, and the
tree of where the time went (wall time, so waits on the database show).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from pyinstrument import Profiler

from bench import database
from bench.__main__ import DEFAULT_POSTGRES, DEFAULT_REDIS, loopback
from bench.ingestion import callback_requests
from webhook_app.infra.migrate import upgrade
from webhook_app.sandbox import SandboxKnobs, SandboxServer
from webhook_app.services.applying import apply_pending
from webhook_app.settings import normalize_database_url

SECRET = secrets.token_urlsafe(32)
TOKEN = secrets.token_urlsafe(32)
BATCH = 20  # stored callbacks applied per profiled call
JOBS = 1000  # loaded for get-one and the list, beside the callback and submission jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--calls", type=int, default=400, help="calls profiled per path")
    parser.add_argument(
        "--postgres", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    )
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS))
    args = parser.parse_args(argv)
    server = normalize_database_url(loopback(args.postgres))
    name = f"webhook_app_profile_{secrets.token_hex(6)}"
    url = database.create_database(server, name)
    queue = f"profile-{secrets.token_hex(6)}"
    sandbox = SandboxServer(knobs=SandboxKnobs(preview_delay=3600, final_delay=3600)).start()
    try:
        upgrade(url)
        os.environ.update(
            APP_ENV="test",
            DATABASE_URL=url,
            CELERY_BROKER_URL=loopback(args.redis),
            CELERY_QUEUE=queue,
            CALLBACK_SECRET=SECRET,
            API_TOKENS=TOKEN,
            SECRET_KEY=secrets.token_urlsafe(32),
            DP_API_URL=sandbox.url,
            # The sandbox would call back later; nobody listens there, and the run ends first.
            PUBLIC_BASE_URL="http://127.0.0.1:9",
            # The profile measures the work of each call, not the deployment's pace.
            UPSTREAM_RATE_LIMIT="0",
        )
        profile_paths(url, args.calls)
    finally:
        sandbox.stop()
        from webhook_app.infra.queue import make_celery
        from webhook_app.settings import Settings

        with make_celery(Settings.from_env()).connection_for_write() as connection:
            connection.default_channel.queue_purge(queue)
        database.drop_database(server, name)
    return 0


def profile_paths(url: str, calls: int) -> None:
    from webhook_app.app import create_app

    start = datetime.now(UTC) - timedelta(hours=1)
    database.load_jobs(url, 1, JOBS, start=start, submitted_only=False)
    waiting = 1_000_000
    database.load_jobs(url, waiting, calls, start=start, submitted_only=True)
    app = create_app()
    _quiet_logs()
    client = app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}

    callbacks = iter(callback_requests(SECRET, waiting, calls))

    def callback() -> None:
        _, path, body = next(callbacks)
        answer = client.post(path, data=body, content_type="application/json")
        assert answer.status_code < 300, answer.data

    def get_one(n: int = 0) -> None:
        answer = client.get(f"/api/v1/jobs/{database.public_id(1 + n % JOBS)}", headers=auth)
        assert answer.status_code == 200, answer.data

    def list_page() -> None:
        answer = client.get("/api/v1/jobs?limit=50&status=completed", headers=auth)
        assert answer.status_code == 200, answer.data

    created = [
        client.post("/api/v1/jobs", json={"prompt": f"a heron, {n}"}, headers=auth).get_json()
        for n in range(calls)
    ]
    submitted = iter(_job_ids(url, [job["id"] for job in created]))
    from workers.celery_app import create_worker_app
    from workers.tasks import submit_job

    create_worker_app()

    def submit() -> None:
        submit_job(next(submitted))

    svc = app.extensions["webhook_app"]

    def apply_batch() -> None:
        apply_pending(svc.db, limit=BATCH, recheck_after=svc.settings.recheck_after)

    counter = iter(range(10**9))
    for title, call, count in (
        ("callback (preview then final stage of each job, some repeated)", callback, calls),
        (
            f"applying what the callbacks stored (batches of {BATCH})",
            apply_batch,
            -(-calls // BATCH),
        ),
        ("get-one", lambda: get_one(next(counter)), calls),
        ("list page (status=completed, 50 jobs)", list_page, max(1, calls // 4)),
        ("submission task (claim, imageGenerator.generate, record)", submit, calls),
    ):
        _profile(title, call, count)


def _profile(title: str, call: Callable[[], None], count: int) -> None:
    for _ in range(min(10, count // 10)):  # warm the caches before measuring
        call()
    measured = count - min(10, count // 10)
    with _profiled() as profiler:
        began = time.process_time()
        for _ in range(measured):
            call()
        cpu = time.process_time() - began
    print(f"## {title}: {measured} calls, {cpu / measured * 1000:.2f} ms CPU each (profiled)\n")
    print(profiler.output_text(unicode=False, color=False, show_all=False))
    sys.stdout.flush()


@contextmanager
def _profiled() -> Iterator[Profiler]:
    profiler = Profiler(interval=0.0005)
    profiler.start()
    try:
        yield profiler
    finally:
        profiler.stop()


def _quiet_logs() -> None:
    # The service logs a line per request and per task, as in production; not to this screen.
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - for the process's life


def _job_ids(url: str, public_ids: list[str]) -> list[int]:
    import psycopg

    with psycopg.connect(database.libpq_url(url)) as connection:
        rows = connection.execute(
            "SELECT id FROM jobs WHERE public_id = ANY(%s) ORDER BY id", (public_ids,)
        ).fetchall()
    return [int(row[0]) for row in rows]


if __name__ == "__main__":
    sys.exit(main())
