"""What every section shares: the plan, the running stack, measuring a load, the findings."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import requests

from bench.figures import Figure
from bench.http_load import Load, run_wrk
from bench.reference import APP as REFERENCE_APP
from bench.reference import Base as ReferenceBase
from bench.statement_counts import read_totals
from bench.system import CpuMeter, CpuShare, children, named, rss_mib, tree
from webhook_app.infra.db import make_engine
from webhook_app.infra.queue import make_celery
from webhook_app.settings import Settings
from webhook_app.tools.serving import gunicorn_argv
from webhook_app.tools.stack import Stack, free_port, wait_until


@dataclass(frozen=True)
class Plan:
    name: str
    reps: int  # every measurement is run this many times
    seconds: float  # each HTTP load
    connections: int = 32
    # List pages: the latency of one client (the target), and of a few polling at once.
    list_clients: tuple[int, int] = (1, 4)
    web_workers: int = 2  # WEB_CONCURRENCY's default
    web_threads: int = Settings.web_threads  # WEB_THREADS's default
    celery_processes: int = 2  # WORKER_CONCURRENCY's default
    ingestion_jobs: int = 8000  # fresh jobs for each callback load
    web_scaling: tuple[int, ...] = (1, 2, 4)
    query_scales: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    query_sample: int = 5000  # jobs named by the get-one and list loads at each scale
    query_reps: int | None = None  # when the queries are run fewer times than the rest
    e2e_jobs: int = 2000
    celery_scaling: tuple[int, ...] = (1, 2)
    e2e_timeout: float = 900
    creators: int = 8  # HTTP clients creating jobs at once
    watched_jobs: int = 10_000  # running jobs a tool watches
    watch_interval: float = 5.0  # how often it asks
    watch_seconds: float = 60  # each run of watching through the feed
    watch_changes: int = 100  # jobs that change per interval meanwhile


FULL = Plan("full", reps=3, seconds=10)
MEDIUM = Plan(
    "medium",
    reps=2,
    seconds=5,
    ingestion_jobs=4000,
    query_scales=(10_000, 100_000),
    query_sample=2000,
    e2e_jobs=400,
    watch_seconds=30,
)
# The smoke run shares its database server with the test suite: few threads and
# connections keep it well inside the server's connection limit.
SMOKE = Plan(
    "smoke",
    reps=2,
    seconds=1,
    connections=8,
    web_threads=2,
    ingestion_jobs=60,
    web_scaling=(2,),
    query_scales=(200,),
    query_sample=50,
    query_reps=1,
    e2e_jobs=12,
    celery_scaling=(2,),
    e2e_timeout=120,
    creators=4,
    watched_jobs=200,
    watch_interval=2.0,
    watch_seconds=3,
    watch_changes=4,
)


class Alongside(Protocol):
    """Something run while a load runs (the freshness probes)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Measured:
    load: Load
    cpu: CpuShare
    round_trips: int = 0  # of the processes whose statements were counted
    started: datetime | None = None  # when the load began

    def per_request(self, value: float) -> float:
        return value / self.load.requests if self.load.requests else float("nan")

    def cpu_ms(self, group: str) -> float:
        """Milliseconds of CPU that a group of processes spent per answered request."""
        return self.per_request(self.cpu.cores.get(group, 0.0) * self.cpu.wall * 1000)


@dataclass
class Findings:
    """What later sections (memory, scaling, the summary) are built from."""

    memory: list[tuple[str, str, list[float]]] = field(default_factory=list)
    scaling: list[tuple[str, str, Figure, str]] = field(default_factory=list)
    unmet: list[str] = field(default_factory=list)
    conditions: list[tuple[str, str, str]] = field(default_factory=list)
    # The last run of each configuration: its CPU, the serving group, how many processes it has.
    cpu: dict[str, tuple[CpuShare, str, int]] = field(default_factory=dict)


def round_trips(counts: dict[str, int]) -> int:
    """Statements, plus the BEGIN and the COMMIT (or ROLLBACK) of each transaction."""
    return counts.get("statements", 0) + 2 * (counts.get("commits", 0) + counts.get("rollbacks", 0))


class Kit:
    def __init__(self, plan: Plan, stack: Stack, wrk: str, workdir: Path) -> None:
        self.plan = plan
        self.stack = stack
        self.wrk = wrk
        self.workdir = workdir
        self.findings = Findings()
        self._reference: str | None = None
        self._settled: dict[Path, dict[str, int]] = {}

    def reference(self) -> str:
        """The references' gunicorn (started once, with the service's workers and threads)."""
        if self._reference is None:
            engine = make_engine(self.stack.env["DATABASE_URL"])
            ReferenceBase.metadata.create_all(engine)
            engine.dispose()
            port = free_port()
            argv = gunicorn_argv(
                f"127.0.0.1:{port}", self.plan.web_workers, self.plan.web_threads, REFERENCE_APP
            )
            self.stack.start_command(
                "reference", argv, DB_STATEMENT_COUNTS=str(self.counts("reference"))
            )
            url = f"http://127.0.0.1:{port}"
            self.wait_ready("reference", lambda: requests.get(f"{url}/healthz", timeout=1).ok)
            self._reference = url
        return self._reference

    @property
    def secret(self) -> str:
        return self.stack.env["CALLBACK_SECRET"].split(",")[0]

    @property
    def authorization(self) -> str:
        return f"Bearer {self.stack.token}"

    def pid(self, name: str) -> int:
        return self.stack.processes[name].pid

    @property
    def parked_queue(self) -> str:
        return self.stack.env["CELERY_QUEUE"] + "-parked"

    def purge(self, queue: str) -> int:
        """Drop the messages waiting in one of the kit's own queues."""
        app = make_celery(Settings.from_env({**self.stack.env, "CELERY_QUEUE": queue}))
        with app.connection_for_write() as connection:
            return int(connection.default_channel.queue_purge(queue) or 0)

    def wait_ready(self, name: str, check: Callable[[], object], timeout: float = 120) -> None:
        """Wait for a part to answer; give up at once if it died."""

        def ready() -> object:
            code = self.stack.processes[name].poll()
            if code is not None:
                raise RuntimeError(f"{name} exited with {code}:\n{self.log_since(name, 0)[-3000:]}")
            return check()

        wait_until(ready, timeout, name)

    def cpu_groups(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for name, process in self.stack.processes.items():
            label = re.sub(r"-\d+$", "", name)
            groups.setdefault(label, []).extend(tree(process.pid))
        groups["postgres"] = named("postgres")
        groups["redis"] = named("redis-server")
        return groups

    def load(
        self,
        url: str,
        requests_file: Path,
        *,
        connections: int | None = None,
        auth: str = "",
        counts: Path | None = None,
        during: Alongside | None = None,
    ) -> Measured:
        """One wrk load, with the CPU each group used and, given a DB_STATEMENT_COUNTS
        directory, the round trips its processes made. `during` runs alongside the load
        only, not while the counts settle before and after it (it would keep them moving)."""
        # Only loads move a part's counts: the last settled reading is where this one starts.
        before = (self._settled.get(counts) or self.settled_counts(counts)) if counts else {}
        meter = CpuMeter(self.cpu_groups)
        meter.start()
        started = datetime.now(UTC)
        if during is not None:
            during.start()
        try:
            load = run_wrk(
                self.wrk,
                url,
                requests_file,
                connections=connections or self.plan.connections,
                seconds=self.plan.seconds,
                authorization=auth,
            )
        finally:
            if during is not None:
                during.stop()
        cpu = meter.stop({"wrk": load.cpu_seconds})
        after = self.settled_counts(counts) if counts else {}
        if counts:
            self._settled[counts] = after
        return Measured(load, cpu, round_trips(after) - round_trips(before), started)

    def counts(self, name: str) -> Path:
        """The DB_STATEMENT_COUNTS directory of a part."""
        return self.workdir / "counts" / name

    def settled_counts(self, directory: Path) -> dict[str, int]:
        """Statement counts once the processes have been quiet for a moment."""
        last, steady_since = read_totals(directory), time.monotonic()
        deadline = time.monotonic() + 30
        while time.monotonic() - steady_since < 0.5 and time.monotonic() < deadline:
            time.sleep(0.1)
            now = read_totals(directory)
            if now != last:
                last, steady_since = now, time.monotonic()
        return last

    def rss(self, name: str) -> list[float]:
        """RSS (MiB) of each worker process of a part: gunicorn's workers, Celery's pool."""
        root = self.pid(name)
        workers = children(root)
        # gunicorn: the workers are the master's children; Celery: the main process and its pool.
        pids = workers if name.startswith("web") else [root, *workers]
        return [round(rss_mib(pid), 1) for pid in pids]

    def log_size(self, name: str) -> int:
        path = self.workdir / f"{name}.log"
        return path.stat().st_size if path.exists() else 0

    def log_since(self, name: str, offset: int) -> str:
        with (self.workdir / f"{name}.log").open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
