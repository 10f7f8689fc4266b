"""3. Jobs created over HTTP, submitted by Celery, completed by the sandbox's callbacks, beside
a no-op Celery task; 5. its scaling with worker processes; 4. the workers' memory."""

from __future__ import annotations

import re
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import psycopg
import redis
import requests

from bench import database
from bench.figures import Figure, percentile
from bench.kit import Kit, round_trips
from bench.noop_worker import NOOP
from bench.system import CpuMeter, load_average
from webhook_app.infra.queue import make_celery
from webhook_app.settings import Settings
from webhook_app.tools.stack import wait_until

RECEIVED = re.compile(r"Task (\S+)\[[^\]]+\] received")
# The worker logs one line per task it ran, whatever its outcome (webhook_app.infra.logs).
ENDED = re.compile(r"\btask finished \[outcome=")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class EndToEnd:
    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        self.local = threading.local()
        self.broker = redis.Redis.from_url(kit.stack.env["CELERY_BROKER_URL"])

    # --- one run ------------------------------------------------------------------------

    def create(self, n: int) -> str:
        http = getattr(self.local, "http", None)
        if http is None:
            http = self.local.http = requests.Session()
            http.headers["Authorization"] = self.kit.authorization
        answer = http.post(
            f"{self.kit.stack.url}/api/v1/jobs",
            json={"prompt": f"a lighthouse at dawn, end-to-end job {n}", "aspect_ratio": "16:9"},
            timeout=30,
        )
        answer.raise_for_status()
        return str(answer.json()["id"])

    def finished_jobs(self, since: datetime) -> list[dict[str, object]]:
        """The run's jobs that are terminal, read through the query API."""
        http = requests.Session()
        http.headers["Authorization"] = self.kit.authorization
        found = []
        for status in ("completed", "failed", "timed_out"):
            cursor = None
            while True:
                params = {"status": status, "limit": 200, "created_after": since.isoformat()}
                if cursor:
                    params["cursor"] = cursor
                page = http.get(f"{self.kit.stack.url}/api/v1/jobs", params=params, timeout=30)
                page.raise_for_status()
                body = page.json()
                found += body["jobs"]
                cursor = body.get("next_cursor")
                if not cursor:
                    break
        return found

    def idle(self, worker: str, log_offset: int) -> bool:
        """Nothing waits in the queue and every task the worker took has ended."""
        log = self.kit.log_since(worker, log_offset)
        waiting = self.broker.llen(self.kit.stack.env["CELERY_QUEUE"])
        return not waiting and len(RECEIVED.findall(log)) == len(ENDED.findall(log))

    def terminal(self, after_id: int) -> int:
        """How many jobs above that id are terminal (asked of the database, not the API, so
        that watching adds no load to the service)."""
        return self.scalar(
            "SELECT count(*) FROM jobs WHERE id > %s "
            "AND status IN ('completed', 'failed', 'timed_out')",
            after_id,
        )

    def scalar(self, query: str, *parameters: object) -> int:
        with psycopg.connect(database.libpq_url(self.kit.stack.env["DATABASE_URL"])) as db:
            row = db.execute(query, parameters).fetchone()
        return int(row[0] or 0) if row else 0

    def run_once(self, worker: str) -> dict[str, float]:
        """One batch of jobs from creation to completion; its figures by name."""
        kit, plan = self.kit, self.kit.plan
        counts = kit.workdir / "counts"
        before = kit.settled_counts(counts)
        log_offset = kit.log_size(worker)
        # created_after is strict: start a moment before the first job.
        since = datetime.now().astimezone() - timedelta(seconds=1)
        last_id = self.scalar("SELECT max(id) FROM jobs")
        meter = CpuMeter(kit.cpu_groups)
        meter.start()
        started = time.monotonic()
        with ThreadPoolExecutor(plan.creators) as pool:
            ids = list(pool.map(self.create, range(plan.e2e_jobs)))
        created_in = time.monotonic() - started
        wait_until(
            lambda: self.terminal(last_id) >= len(ids),
            plan.e2e_timeout,
            f"{len(ids)} jobs terminal",
            interval=1.0,
        )
        cpu = meter.stop()
        # The media data of the last jobs is still being fetched: let it finish, so that it
        # is counted in this run and does not run into the next one.
        wait_until(lambda: self.idle(worker, log_offset), plan.e2e_timeout, f"{worker} idle")
        after = kit.settled_counts(counts)
        jobs = self.finished_jobs(since)
        mine = [job for job in jobs if job["id"] in set(ids)]
        completed = [job for job in mine if job["status"] == "completed"]
        created = [parse_time(str(job["created_at"])) for job in mine]
        finished = [parse_time(str(job["finished_at"])) for job in completed]
        latencies = [
            (
                parse_time(str(job["finished_at"])) - parse_time(str(job["created_at"]))
            ).total_seconds()
            for job in completed
        ]
        span = (max(finished) - min(created)).total_seconds() if finished else float("nan")
        tasks = Counter(RECEIVED.findall(kit.log_since(worker, log_offset)))
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
        trips = round_trips(after) - round_trips(before)
        self.cpu = cpu
        self.task_names = ", ".join(
            f"{name.split('.')[-1]} {n / len(ids):.2f}" for name, n in sorted(tasks.items())
        )
        return {
            "jobs_per_second": len(completed) / span if span else 0.0,
            "p50": percentile(latencies, 0.5),
            "p99": percentile(latencies, 0.99),
            "completed": len(completed),
            "jobs": len(ids),
            "created_per_second": len(ids) / created_in,
            "tasks": sum(tasks.values()) / len(ids),
            "round_trips": trips / len(ids),
            "statements": delta.get("statements", 0) / len(ids),
            "transactions": (delta.get("commits", 0) + delta.get("rollbacks", 0)) / len(ids),
        }

    # --- the reference ------------------------------------------------------------------

    def noop_rate(self, processes: int, tasks: int) -> float:
        kit = self.kit
        settings = Settings.from_env(kit.stack.env)
        app = make_celery(settings)
        counter = redis.Redis.from_url(settings.broker_url)
        key = f"bench:{settings.queue}:noop"
        counter.delete(key)
        started = time.monotonic()
        with app.producer_or_acquire() as producer:
            for _ in range(tasks):
                app.send_task(NOOP, args=[key], producer=producer)
        wait_until(lambda: int(counter.get(key) or 0) >= tasks, kit.plan.e2e_timeout, "no-op tasks")
        elapsed = time.monotonic() - started
        counter.delete(key)
        return tasks / elapsed

    def start_worker(self, name: str, argv: list[str] | None, processes: int) -> None:
        kit = self.kit
        offset = kit.log_size(name)
        env = {"DB_STATEMENT_COUNTS": str(kit.counts(name))}
        if argv:
            kit.stack.start_command(name, argv, **env)
        else:
            kit.stack.start(name, "worker", "--concurrency", str(processes), **env)
        kit.wait_ready(name, lambda: "ready." in kit.log_since(name, offset))

    # --- the section --------------------------------------------------------------------

    def run(self) -> str:
        kit, plan = self.kit, self.kit.plan
        started = load_average()
        rows = []
        noop_tasks = plan.e2e_jobs
        per_processes: dict[int, dict[str, Figure]] = {}
        noop: dict[int, Figure] = {}
        main_runs: list[dict[str, float]] = []
        for processes in sorted(plan.celery_scaling, key=lambda p: p != plan.celery_processes):
            name = f"worker-{processes}"
            self.start_worker(name, None, processes)
            figures: dict[str, Figure] = {}
            for rep in range(plan.reps):
                result = self.run_once(name)
                for key, value in result.items():
                    figures.setdefault(key, Figure()).add(value)
                if processes == plan.celery_processes:
                    main_runs.append(result)
                    task_names = self.task_names
                    kit.findings.memory.append(
                        ("Celery worker", f"end-to-end {rep + 1}", kit.rss(name))
                    )
                    kit.findings.memory.append(
                        ("gunicorn (service)", f"end-to-end {rep + 1}", kit.rss("web"))
                    )
            kit.stack.stop(name)
            per_processes[processes] = figures
            kit.findings.cpu[f"end to end, {processes} Celery processes"] = (
                self.cpu,
                "worker",
                processes,
            )

            noop_name = f"noop-worker-{processes}"
            self.start_worker(
                noop_name, [sys.executable, "-m", "bench.noop_worker", str(processes)], processes
            )
            noop[processes] = Figure()
            for _ in range(plan.reps):
                noop[processes].add(self.noop_rate(processes, noop_tasks))
            kit.stack.stop(noop_name)

        main = per_processes[plan.celery_processes]
        reference = noop[plan.celery_processes]
        tasks_per_job = main["tasks"].median
        ceiling = reference.median / tasks_per_job if tasks_per_job else float("nan")
        last = main_runs[-1]
        jobs_per_second = main["jobs_per_second"]
        rows = [
            "| figure | service | reference | ratio |",
            "| --- | --- | --- | --- |",
            f"| sustained throughput (jobs/s) | {jobs_per_second.show(1)} | {ceiling:.1f} jobs/s: "
            f"no-op task {reference.show()} tasks/s ÷ {tasks_per_job:.2f} tasks per job | "
            f"{jobs_per_second.median / ceiling:.2f}x |",
            f"| creation → completed p50 (s) | {main['p50'].show(2)} | | |",
            f"| creation → completed p99 (s) | {main['p99'].show(2)} | | |",
            f"| jobs completed / created (last run) | {int(last['completed'])} / "
            f"{int(last['jobs'])} | | |",
            f"| creation over HTTP (jobs/s, {plan.creators} clients) | "
            f"{main['created_per_second'].show()} | | |",
            f"| Celery tasks per job | {main['tasks'].show(2)} ({task_names}) | | |",
            f"| database round trips per job | {main['round_trips'].show(1)} "
            f"({main['statements'].median:.1f} statements, "
            f"{main['transactions'].median:.1f} transactions) | | |",
        ]
        for processes in plan.celery_scaling:
            kit.findings.scaling.append(
                (
                    "end to end",
                    f"{processes} Celery processes",
                    per_processes[processes]["jobs_per_second"],
                    "jobs/s",
                )
            )
            kit.findings.scaling.append(
                ("no-op Celery task", f"{processes} Celery processes", noop[processes], "tasks/s")
            )
        if main["created_per_second"].median > 1.2 * jobs_per_second.median:
            rows += [
                "",
                "Jobs are created faster than they complete, so the time from creation to "
                "completion is mostly time spent waiting in the queue: the p50 and p99 grow "
                "with the size of the batch, the sustained throughput does not.",
            ]
        rows += [
            "",
            f"{plan.e2e_jobs} jobs per run, created by {plan.creators} HTTP clients at once; "
            f"{plan.celery_processes} Celery processes; the sandbox answers at once and sends "
            "both callback stages without delay; each job also has its items' media data fetched "
            "(enrich task). Times are the jobs' own `created_at` and `finished_at` as the query "
            "API reports them. The reference: as many tasks as there are jobs sent to a no-op "
            "task (it counts itself in Redis) on the same broker, queue settings and worker "
            "arguments. Round trips: statements + BEGIN and COMMIT of each transaction, counted "
            "in every web and worker process (DB_STATEMENT_COUNTS).",
            "",
            "CPU during the last run with "
            f"{plan.celery_processes} processes (cores): "
            + kit.findings.cpu[f"end to end, {plan.celery_processes} Celery processes"][
                0
            ].summary(),
        ]
        kit.findings.conditions.append(("3. end to end", started, load_average()))
        return "\n".join(rows)
