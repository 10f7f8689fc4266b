"""`python -m bench [--smoke | --medium] [--output PATH]`: run the kit, write RESULTS.md."""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from urllib.parse import urlsplit

import redis
import requests

from bench import database
from bench.end_to_end import EndToEnd
from bench.ingestion import Ingestion
from bench.kit import FULL, MEDIUM, SMOKE, Kit
from bench.queries import Queries
from bench.report import compose
from bench.system import ensure_wrk, load_average, machine, versions
from bench.watching import Watching
from webhook_app.infra.migrate import upgrade
from webhook_app.settings import normalize_database_url
from webhook_app.tools.stack import Stack

LOOPBACK = ("127.0.0.1", "localhost", "::1")
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/14"


def loopback(url: str) -> str:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK and not host.startswith("127."):
        sys.exit(f"the kit runs on loopback only; {host!r} is not a loopback address")
    return url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="tiny numbers: checks the kit works")
    size.add_argument("--medium", action="store_true", help="smaller tables and shorter loads")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "RESULTS.md")
    parser.add_argument(
        "--postgres", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    )
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS))
    parser.add_argument("--keep", action="store_true", help="keep the logs and request files")
    parser.add_argument(
        "--only",
        metavar="SECTIONS",
        help="comma-separated sections to run (queries, watching, ingestion, e2e); all unset",
    )
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    plan = SMOKE if args.smoke else MEDIUM if args.medium else FULL
    server = normalize_database_url(loopback(args.postgres))
    broker = loopback(args.redis)

    wrk = ensure_wrk()
    redis_version = redis.Redis.from_url(broker, socket_connect_timeout=3).info("server")[
        "redis_version"
    ]
    header = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "versions": versions(
            {"PostgreSQL": database.server_version(server), "Redis": str(redis_version)}, wrk
        ),
        "load": load_average(),
    }
    workdir = Path(tempfile.mkdtemp(prefix="webhook-bench-"))
    name = f"webhook_app_bench_{secrets.token_hex(6)}"
    database_url = database.create_database(server, name)
    queue = f"bench-{secrets.token_hex(6)}"
    print(f"bench: {plan.name} run, database {name}, queue {queue}, logs in {workdir}", flush=True)
    stack = Stack(
        workdir,
        database_url,
        broker,
        CELERY_QUEUE=queue,
        WEB_THREADS=str(plan.web_threads),
        # The references and the no-op worker are modules of this kit, not of the package;
        # its hooks count every process's database round trips.
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT / "bench" / "hooks"), str(ROOT), os.environ.get("PYTHONPATH")])
        ),
    )
    kit = Kit(plan, stack, wrk, workdir)
    sections: dict[str, str] = {}
    failed = False
    began = time.monotonic()
    try:
        upgrade(database_url)
        stack.start_sandbox(SANDBOX_PREVIEW_DELAY="0", SANDBOX_FINAL_DELAY="0")
        stack.start(
            "web",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(stack.web_port),
            "--workers",
            str(plan.web_workers),
            DB_STATEMENT_COUNTS=str(workdir / "counts" / "web"),
        )
        kit.wait_ready("web", lambda: requests.get(f"{stack.url}/readyz", timeout=1).ok)
        print(f"bench: stack up in {time.monotonic() - began:.0f} s", flush=True)
        # The queries first: later sections then run against the table at its largest.
        for key, section in (
            ("queries", Queries),
            ("watching", Watching),
            ("ingestion", Ingestion),
            ("e2e", EndToEnd),
        ):
            if only is not None and key not in only:
                continue
            print(f"bench: {key} ...", flush=True)
            began = time.monotonic()
            try:
                sections[key] = section(kit).run()
                print(f"bench: {key} took {time.monotonic() - began:.0f} s", flush=True)
            except Exception:
                failed = True
                sections[key] = f"**This section failed:**\n\n```\n{traceback.format_exc()}```"
                print(sections[key], stack.logs(), sep="\n", flush=True)
    finally:
        stack.stop_all()
        for leftover in (queue, kit.parked_queue):
            kit.purge(leftover)
        database.drop_database(server, name)
    configuration = [
        f"{plan.name} run: every measurement {plan.reps} times; HTTP loads by wrk "
        f"({plan.connections} connections unless said otherwise, 2 threads, {plan.seconds:g} s "
        "each, then it stops)",
        f"gunicorn: {plan.web_workers} workers x {plan.web_threads} threads (gthread), no access "
        "log (the app logs each request), as `webhook-app serve` runs it; the references are "
        "served with the same arguments",
        f"Celery: {plan.celery_processes} prefork processes, prefetch 1, late acknowledgement, "
        f"Redis broker at {broker} with its own queue `{queue}` (nothing else in Redis is touched)",
        f"PostgreSQL at {server.split('@')[-1].rsplit('/', 1)[0]}, trust authentication; its own "
        "database, created for the run and dropped after; pools: one connection per thread "
        f"({plan.web_threads}) + as many overflow per web process, 2 + 2 per Celery process",
        "the sandbox plays Depositphotos with no delay (SANDBOX_PREVIEW_DELAY and "
        "SANDBOX_FINAL_DELAY 0); no beat (nothing is overdue within a run)",
        "every process on loopback addresses only",
    ]
    text = compose(
        plan=plan,
        started=header["started"],  # type: ignore[arg-type]
        machine=header["machine"],  # type: ignore[arg-type]
        versions=header["versions"],  # type: ignore[arg-type]
        configuration=configuration,
        sections=sections,
        findings=kit.findings,
        load=(str(header["load"]), load_average()),
    )
    args.output.write_text(text)
    print(f"bench: wrote {args.output}", flush=True)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
