"""1. Callback ingestion beside a no-op endpoint and a naive receiver, and the applying of
what it stored; 5. its scaling with gunicorn workers; 4. the web workers' memory after each
load."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import requests

from bench import database
from bench.figures import Figure, ratio, verdict
from bench.freshness import Freshness
from bench.http_load import write_requests
from bench.kit import Kit, Measured, round_trips
from bench.system import cpu_seconds, load_average, tree
from webhook_app.infra.callback_tokens import callback_token
from webhook_app.tools.stack import free_port

BLOCK = 100  # previews of a block of jobs, then their finals
DUPLICATE_EVERY = 10  # every tenth message is followed by a repeat of an earlier one
# The app's own line per request (webhook_app.web.observe), as text or as JSON.
ANSWERED = re.compile(
    rb'route=/callbacks/\S+ status=(\d{3})|"route": "/callbacks/[^"]+", "status": (\d{3})'
)
PROMPT = "a lighthouse at dawn over a calm sea, soft golden light, long exposure, " * 2
PROBES = 300  # jobs kept apart for the freshness probes of each load
# The longest the applier may take to catch up after a load before the run counts as failed.
CATCH_UP = 120.0


def body(n: int, final: bool) -> str:
    """One callback as the sandbox sends it: the success envelope around the generation."""
    items = [
        {
            "uuid": database.item_uuid(n, p),
            "dpItemId": 700_000_000 + n * database.ITEMS_PER_JOB + p if final else None,
            "previewUrl": f"https://st.depositphotos.com/ai-preview/{database.item_uuid(n, p)}.jpg",
        }
        for p in range(database.ITEMS_PER_JOB)
    ]
    data = {
        "uuid": database.generation_uuid(n),
        "prompt": PROMPT.strip(),
        "status": "completed" if final else "processing",
        "purchaseStatus": "paid" if final else "deferred",
        "aspectRatio": "16:9",
        "medium": "photography",
        "items": items,
    }
    envelope = {"timestamp": "2026-11-27 12:00:00", "version": "1.3", "type": "success"}
    return json.dumps({**envelope, "data": data})


def callback_requests(secret: str, first: int, count: int) -> list[tuple[str, str, str]]:
    messages = []
    for start in range(first, first + count, BLOCK):
        block = range(start, min(start + BLOCK, first + count))
        for final in (False, True):
            for n in block:
                job = database.public_id(n)
                path = f"/callbacks/{job}/{callback_token(secret, job)}"
                messages.append(("POST", path, body(n, final)))
    mixed = []
    for index, message in enumerate(messages):
        mixed.append(message)
        if index % DUPLICATE_EVERY == DUPLICATE_EVERY - 1:
            mixed.append(messages[index - DUPLICATE_EVERY // 2])
    return mixed


def as_reference(lines: list[tuple[str, str, str]], route: str) -> list[tuple[str, str, str]]:
    return [(m, path.replace("/callbacks/", f"/{route}/", 1), b) for m, path, b in lines]


class Ingestion:
    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        self.next_job = 50_000_000  # far above the query section's ids
        self.files = 0

    def prepare(self) -> list[tuple[str, str, str]]:
        """Fresh waiting jobs in the database, and the callbacks that complete them."""
        return self.prepare_with_probes()[0]

    def prepare_with_probes(
        self,
    ) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
        """Also the preview callbacks of PROBES more jobs, for the freshness probes."""
        # The bulk load resets the id sequences: nothing may be inserting meanwhile.
        self.drain()
        count = self.kit.plan.ingestion_jobs
        first, self.next_job = self.next_job, self.next_job + count + PROBES
        start = datetime.now(UTC) - timedelta(hours=1)
        database.load_jobs(
            self.kit.stack.env["DATABASE_URL"],
            first,
            count + PROBES,
            start=start,
            submitted_only=True,
        )
        probes = callback_requests(self.kit.secret, first + count, PROBES)
        previews = {line[1]: line for line in probes if '"status": "processing"' in line[2]}
        return callback_requests(self.kit.secret, first, count), list(previews.values())

    def write(self, lines: list[tuple[str, str, str]]) -> Path:
        self.files += 1
        return write_requests(self.kit.workdir / f"callbacks-{self.files}.txt", lines)

    def run(self) -> str:
        kit, plan = self.kit, self.kit.plan
        started = load_average()
        reference_url = kit.reference()
        service: dict[int, Figure] = {n: Figure() for n in plan.web_scaling}
        p99, errors = Figure(), 0
        noop, naive, noop_p99, naive_p99 = Figure(), Figure(), Figure(), Figure()
        floor, floor_p99 = Figure(), Figure()
        cpu_lines: dict[str, str] = {}
        # CPU (ms) and database round trips per request, of the service and each reference.
        cpu_ms = {name: Figure() for name in ("service", "noop", "naive", "floor")}
        trips = {name: Figure() for name in ("service", "noop", "naive", "floor")}
        sample = 0
        applied, fresh_p50, fresh_max = Figure(), Figure(), Figure()
        lag_p50, lag_max = Figure(), Figure()
        applier_ms, applier_trips = Figure(), Figure()
        unseen = 0
        web = start_web(kit, plan.web_workers)
        # The freshness reads go to a gunicorn of their own: its CPU is not the receiver's.
        reader = start_web(kit, 1, name="reader")
        applier = start_applier(kit)
        for rep in range(plan.reps):
            lines, probes = self.prepare_with_probes()
            sample = max(sample, len(lines[0][2]))
            counts = kit.counts(f"web-{plan.web_workers}")
            applier_before = kit.settled_counts(kit.counts("applier"))
            applier_cpu = cpu_seconds(tree(applier))
            freshness = Freshness(
                web, reader, kit.authorization, probes, job_of=lambda p: p.split("/")[2]
            )
            measured = kit.load(web, self.write(lines), counts=counts, during=freshness)
            caught_up = self.wait_applied()
            assert measured.started is not None
            applied.add(measured.load.requests / (caught_up - measured.started).total_seconds())
            lag = self.taken_after(measured.started)
            lag_p50.add(lag[0])
            lag_max.add(lag[1])
            applier_ms.add(measured.per_request((cpu_seconds(tree(applier)) - applier_cpu) * 1000))
            applier_after = kit.settled_counts(kit.counts("applier"))
            applier_trips.add(
                measured.per_request(round_trips(applier_after) - round_trips(applier_before))
            )
            fresh_p50.add(freshness.p50())
            fresh_max.add(freshness.max())
            unseen += freshness.unseen
            cpu_ms["service"].add(measured.cpu_ms("web"))
            trips["service"].add(measured.per_request(measured.round_trips))
            service[plan.web_workers].add(measured.load.per_second)
            p99.add(measured.load.p99_ms)
            errors += measured.load.errors
            cpu_lines["receiver"] = measured.cpu.summary()
            main_cpu = measured.cpu
            main_measured = measured
            kit.findings.memory.append(
                ("gunicorn (service)", f"load {rep + 1}", kit.rss(f"web-{plan.web_workers}"))
            )
            for route, figure, latency in (
                ("noop", noop, noop_p99),
                ("naive", naive, naive_p99),
                ("floor", floor, floor_p99),
            ):
                requests_file = self.write(as_reference(lines, route))
                measured = kit.load(reference_url, requests_file, counts=kit.counts("reference"))
                cpu_ms[route].add(measured.cpu_ms("reference"))
                trips[route].add(measured.per_request(measured.round_trips))
                figure.add(measured.load.per_second)
                latency.add(measured.load.p99_ms)
                cpu_lines[route] = measured.cpu.summary()

        kit.findings.cpu[f"callback ingestion, {plan.web_workers} gunicorn workers"] = (
            main_cpu,
            "web",
            plan.web_workers,
        )
        kit.stack.stop(f"web-{plan.web_workers}")
        for workers in plan.web_scaling:
            if workers == plan.web_workers:
                continue
            url = start_web(kit, workers)
            for _ in range(plan.reps):
                measured = kit.load(url, self.write(self.prepare()))
                service[workers].add(measured.load.per_second)
                errors += measured.load.errors
                kit.findings.cpu[f"callback ingestion, {workers} gunicorn workers"] = (
                    measured.cpu,
                    "web",
                    workers,
                )
            kit.stack.stop(f"web-{workers}")
        for workers in plan.web_scaling:
            kit.findings.scaling.append(
                ("callback ingestion", f"{workers} gunicorn workers", service[workers], "req/s")
            )

        self.drain()
        kit.stack.stop("applier")
        kit.stack.stop("reader")
        answered, stored, outcomes = self.reconcile_counts()
        main = service[plan.web_workers]
        rows = [
            ("throughput vs naive receiver (req/s)", main, naive, 1.5, "≥ 1.5x"),
            ("throughput vs no-op endpoint (req/s)", main, noop, 0.35, "≥ 0.35x"),
        ]
        out = [
            "| figure | service | reference | ratio | target | |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for label, value, reference, wanted, target in rows:
            met = ratio(value, reference) >= wanted
            out.append(
                f"| {label} | {value.show()} | {reference.show()} | "
                f"{ratio(value, reference):.2f}x | {target} | {verdict(met)} |"
            )
            if not met:
                kit.findings.unmet.append(f"ingestion {label}: {ratio(value, reference):.2f}x")
        out.append(
            f"| p99 latency (ms) | {p99.show(1)} | no-op {noop_p99.show(1)}, naive "
            f"{naive_p99.show(1)}, gunicorn alone {floor_p99.show(1)} | | ≤ 50 | "
            f"{verdict(p99.median <= 50)} |"
        )
        if p99.median > 50:
            kit.findings.unmet.append(f"ingestion p99 {p99.median:.1f} ms")
        out.append(f"| errors (service, every run) | {errors} | | | 0 | {verdict(not errors)} |")
        out.append(
            f"| deliveries stored (sum of received_count) = answered 2xx | {stored} = {answered} "
            f"| | | equal | {verdict(stored == answered)} |"
        )
        out.append(
            f"| CPU per request of the web processes (ms) | {cpu_ms['service'].show(2)} | no-op "
            f"{cpu_ms['noop'].show(2)}, naive {cpu_ms['naive'].show(2)}, gunicorn alone "
            f"{cpu_ms['floor'].show(2)} ({floor.show()} req/s) | "
            f"{ratio(cpu_ms['service'], cpu_ms['naive']):.2f}x naive's | | |"
        )
        out.append(
            f"| database round trips per request | {trips['service'].show(1)} | naive "
            f"{trips['naive'].show(1)} | | | |"
        )
        met = ratio(applied, naive) >= 1.0
        out.append(
            f"| applied throughput vs naive receiver (callbacks/s, from the load's start to "
            f"its last delivery applied) | {applied.show()} | {naive.show()} | "
            f"{ratio(applied, naive):.2f}x | ≥ 1.0x | {verdict(met)} |"
        )
        if not met:
            kit.findings.unmet.append(f"ingestion applied {ratio(applied, naive):.2f}x naive")
        fresh = fresh_p50.median <= 200 and fresh_max.median <= 1000 and not unseen
        out.append(
            f"| freshness under load: 2xx to visible in the query API (ms), p50 / max | "
            f"{fresh_p50.show()} / {fresh_max.show()} | | | ≤ 200 / ≤ 1000 | {verdict(fresh)} |"
        )
        out.append(
            f"| of which: stored to taken by the applier (ms), p50 / max | {lag_p50.show()} / "
            f"{lag_max.show()} | | | | |"
        )
        if not fresh:
            kit.findings.unmet.append(
                f"ingestion freshness p50 {fresh_p50.median:.0f} ms, max {fresh_max.median:.0f} "
                f"ms, {unseen} probes never seen"
            )
        out.append(
            f"| CPU per callback of the applier (ms) | {applier_ms.show(2)} | request path "
            f"{cpu_ms['service'].show(2)} | | | |"
        )
        out.append(
            f"| database round trips per callback of the applier | {applier_trips.show(2)} | "
            f"request path {trips['service'].show(1)} | | | |"
        )
        if errors or stored != answered:
            kit.findings.unmet.append(
                f"ingestion errors={errors} stored={stored} answered={answered}"
            )
        if ratio(main, naive) < 1.5 or ratio(main, noop) < 0.35:
            out += [
                "",
                "What limits it: CPU per request, on a machine whose cores are all in use "
                f"(during the receiver's last load {main_cpu.busy:.2f} of {os.cpu_count()} were "
                "busy, the applier's share included; the references face the same). The "
                f"request path spends {cpu_ms['service'].median:.2f} ms per callback, "
                f"{ratio(cpu_ms['service'], cpu_ms['naive']):.1f}x the naive receiver, in "
                f"{trips['service'].median:.1f} database round trips against "
                f"{trips['naive'].median:.1f}: check the token, redact the body, one "
                "INSERT ... SELECT ... ON CONFLICT that finds the job and keeps the delivery, "
                "the request's log line and its metrics, under gunicorn's own handling of the "
                "request (the receiver answers in front of Flask), which alone costs "
                f"{cpu_ms['floor'].median:.2f} ms (a WSGI answer in front of the reference's "
                "Flask, same arguments); beside it, the database's work and the applier's. "
                + cpu_budget(main_measured, naive, noop),
            ]
        if p99.median > 50:
            out += ["", closed_loop(plan.connections, (main, p99), (noop, noop_p99))]
        out += [
            "",
            f"Each load: wrk, {plan.connections} connections, {plan.seconds:g} s, "
            f"{plan.ingestion_jobs} fresh jobs per run, each sent its preview-stage and "
            f"final-stage callback (JSON envelope, {sample} bytes) by blocks of {BLOCK} jobs, "
            f"every {DUPLICATE_EVERY}th message followed by a repeat; the same bodies go to the "
            "references. Requests beyond the prepared list start it again (more duplicates). "
            "One applier (the loop a worker runs in its main process, `bench.applier`, "
            f"APPLY_BATCH_SIZE {kit.stack.env.get('APPLY_BATCH_SIZE', 100)}) applies what the "
            "service stores, during the load and after it until nothing is pending; its CPU "
            "and round trips are counted from the load's start to then. Freshness: every "
            f"0.2 s during the load one more job's preview is sent and the job read (with its "
            "ETag, mostly 304s) every 20 ms through a gunicorn of its own (its CPU is not the "
            "receiver's) until it shows `processing`. The applier's share of that delay is "
            "each delivery's `applied_at` (set once its batch is claimed, its jobs locked and "
            "read) less its `first_received_at`, over every delivery of the load; the rest is "
            "the batch's merge and commit, and the reader's next look.",
            f"Outcomes stored: {outcomes}.",
            "",
            "CPU during the last run of each (cores):",
            *[f"- {name}: {line}" for name, line in cpu_lines.items()],
        ]
        kit.purge(kit.parked_queue)
        kit.findings.conditions.append(("1. ingestion", started, load_average()))
        return "\n".join(out)

    def drain(self) -> None:
        """Wait until no stored delivery is pending."""
        url = database.libpq_url(self.kit.stack.env["DATABASE_URL"])
        deadline = time.monotonic() + CATCH_UP
        with psycopg.connect(url, autocommit=True) as connection:
            while time.monotonic() < deadline:
                pending = connection.execute(
                    "SELECT count(*) FROM deliveries WHERE outcome = 'pending'"
                ).fetchone()
                if pending and pending[0] == 0:
                    return
                time.sleep(0.05)
        raise RuntimeError(f"deliveries still pending {CATCH_UP:g} s after the load")

    def wait_applied(self) -> datetime:
        """Wait until nothing is pending; when the last delivery was applied."""
        self.drain()
        url = database.libpq_url(self.kit.stack.env["DATABASE_URL"])
        with psycopg.connect(url, autocommit=True) as connection:
            row = connection.execute("SELECT max(applied_at) FROM deliveries").fetchone()
        assert row and row[0], "no delivery was applied"
        return row[0]

    def taken_after(self, started: datetime) -> tuple[float, float]:
        """How long after being stored the deliveries of a load were taken by the applier
        (ms): the median and the longest."""
        url = database.libpq_url(self.kit.stack.env["DATABASE_URL"])
        with psycopg.connect(url, autocommit=True) as connection:
            row = connection.execute(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), max(lag) FROM ("
                "SELECT extract(epoch FROM applied_at - first_received_at) * 1000 AS lag "
                "FROM deliveries WHERE first_received_at >= %s) AS taken",
                (started,),
            ).fetchone()
        assert row and row[0] is not None, "no delivery of the load was applied"
        return float(row[0]), float(row[1])

    def reconcile_counts(self) -> tuple[int, int, str]:
        answered = 0
        for log in self.kit.workdir.glob("web*.log"):
            for as_text, as_json in ANSWERED.findall(log.read_bytes()):
                answered += (as_text or as_json).startswith(b"2")
        url = database.libpq_url(self.kit.stack.env["DATABASE_URL"])
        with psycopg.connect(url) as connection:
            row = connection.execute(
                "SELECT coalesce(sum(received_count), 0) FROM deliveries"
            ).fetchone()
            stored = int(row[0]) if row else 0
            rows = connection.execute(
                "SELECT outcome, count(*), sum(received_count) - count(*) FROM deliveries "
                "GROUP BY outcome ORDER BY outcome"
            ).fetchall()
        outcomes = ", ".join(f"{o}: {n} deliveries, {d} repeats counted" for o, n, d in rows)
        return answered, stored, outcomes


def start_applier(kit: Kit) -> int:
    """The applier for the callback loads; its follow-up tasks go to the parked queue."""
    kit.stack.start_command(
        "applier",
        [sys.executable, "-m", "bench.applier"],
        CELERY_QUEUE=kit.parked_queue,
        DB_STATEMENT_COUNTS=str(kit.counts("applier")),
    )
    kit.wait_ready("applier", lambda: "applier ready." in kit.log_since("applier", 0))
    return kit.pid("applier")


def start_web(kit: Kit, workers: int, name: str | None = None) -> str:
    """A gunicorn for the callback loads (or, named, for the freshness reads beside them).
    Its follow-up tasks go to a queue no worker reads, emptied at the end, so they never
    reach the end-to-end measurement."""
    port = free_port()
    name = name or f"web-{workers}"
    kit.stack.start(
        name,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        CELERY_QUEUE=kit.parked_queue,
        DB_STATEMENT_COUNTS=str(kit.counts(name)),
    )
    url = f"http://127.0.0.1:{port}"
    kit.wait_ready(name, lambda: requests.get(f"{url}/readyz", timeout=1).ok)
    return url


def closed_loop(
    connections: int, service: tuple[Figure, Figure], noop: tuple[Figure, Figure]
) -> str:
    """What the p99 of a load by a fixed number of connections follows: each (req/s, p99)."""

    def spread(rate: Figure, p99: Figure) -> tuple[float, float]:
        mean = connections / rate.median * 1000  # Little's law: every connection always waits
        return mean, p99.median / mean

    mean, times = spread(*service)
    _, noop_times = spread(*noop)
    return (
        f"What limits p99: with {connections} connections each waiting for its answer, the mean "
        f"latency is {connections} / throughput ({mean:.1f} ms here) and the p99 {times:.1f}x "
        f"that (the no-op's {noop_times:.1f}x). At this spread a p99 of 50 ms needs "
        f"{connections * times / 0.05:.0f} req/s: a matter of throughput, so of the CPU per "
        "callback above, not of a wait of its own."
    )


def cpu_budget(measured: Measured, naive: Figure, noop: Figure) -> str:
    """Where the CPU of the receiver's last load went, per answered callback, and how much of it
    the targets leave, if every core stays busy."""
    cores = os.cpu_count() or 1
    spent = {
        name: measured.cpu_ms(name)
        for name, share in sorted(measured.cpu.cores.items(), key=lambda item: -item[1])
        if share >= 0.01
    }
    other = measured.per_request(
        max(0.0, measured.cpu.busy - sum(measured.cpu.cores.values())) * measured.cpu.wall * 1000
    )
    total = sum(spent.values()) + other
    wanted = max(1.5 * naive.median, 0.35 * noop.median)
    parts = ", ".join(f"{name} {ms:.2f}" for name, ms in spent.items())
    return (
        f"Per answered callback the whole machine spent {total:.2f} ms of CPU ({parts}, "
        f"processes outside the kit {other:.2f}); both throughput targets together ask for "
        f"{wanted:.0f} req/s, which {cores} busy cores allow at {cores * 1000 / wanted:.2f} ms "
        "per callback."
    )
