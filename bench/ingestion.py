"""1. Callback ingestion beside a no-op endpoint and a naive receiver; 5. its scaling with
gunicorn workers; 4. the web workers' memory after each load."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import requests

from bench import database
from bench.figures import Figure, ratio, verdict
from bench.http_load import write_requests
from bench.kit import Kit
from bench.system import load_average
from webhook_app.infra.callback_tokens import callback_token
from webhook_app.tools.stack import free_port

BLOCK = 100  # previews of a block of jobs, then their finals
DUPLICATE_EVERY = 10  # every tenth message is followed by a repeat of an earlier one
# The app's own line per request (webhook_app.web.observe), as text or as JSON.
ANSWERED = re.compile(
    rb'route=/callbacks/\S+ status=(\d{3})|"route": "/callbacks/[^"]+", "status": (\d{3})'
)
PROMPT = "a lighthouse at dawn over a calm sea, soft golden light, long exposure, " * 2


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
        count = self.kit.plan.ingestion_jobs
        first, self.next_job = self.next_job, self.next_job + count
        start = datetime.now(UTC) - timedelta(hours=1)
        database.load_jobs(
            self.kit.stack.env["DATABASE_URL"], first, count, start=start, submitted_only=True
        )
        return callback_requests(self.kit.secret, first, count)

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
        cpu_lines: dict[str, str] = {}
        # CPU (ms) and database round trips per request, of the service and each reference.
        cpu_ms = {name: Figure() for name in ("service", "noop", "naive")}
        trips = {name: Figure() for name in ("service", "noop", "naive")}
        sample = 0
        web = start_web(kit, plan.web_workers)
        for rep in range(plan.reps):
            lines = self.prepare()
            sample = max(sample, len(lines[0][2]))
            counts = kit.counts(f"web-{plan.web_workers}")
            measured = kit.load(web, self.write(lines), counts=counts)
            cpu_ms["service"].add(measured.cpu_ms("web"))
            trips["service"].add(measured.per_request(measured.round_trips))
            service[plan.web_workers].add(measured.load.per_second)
            p99.add(measured.load.p99_ms)
            errors += measured.load.errors
            cpu_lines["receiver"] = measured.cpu.summary()
            main_cpu = measured.cpu
            kit.findings.memory.append(
                ("gunicorn (service)", f"load {rep + 1}", kit.rss(f"web-{plan.web_workers}"))
            )
            for route, figure, latency in (("noop", noop, noop_p99), ("naive", naive, naive_p99)):
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
            f"{naive_p99.show(1)} | | ≤ 50 | {verdict(p99.median <= 50)} |"
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
            f"{cpu_ms['noop'].show(2)}, naive {cpu_ms['naive'].show(2)} | "
            f"{ratio(cpu_ms['service'], cpu_ms['naive']):.2f}x naive's | | |"
        )
        out.append(
            f"| database round trips per request | {trips['service'].show(1)} | naive "
            f"{trips['naive'].show(1)} | | | |"
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
                "busy; the references face the same). The "
                f"receiver spends {cpu_ms['service'].median:.2f} ms per callback, "
                f"{ratio(cpu_ms['service'], cpu_ms['naive']):.1f}x the naive receiver, in "
                f"{trips['service'].median:.0f} database round trips against "
                f"{trips['naive'].median:.0f}: check the token, redact and parse the body, "
                "lock the job and read its items with their archives (ORM objects), record "
                "the transition, upsert the delivery and request the archives (plain "
                "statements), update the job and its items (the ORM's flush), commit, then "
                "queue the follow-up tasks (archiving after a preview; media data and the "
                "finished-job task after a final message), log the request and count it.",
            ]
        out += [
            "",
            f"Each load: wrk, {plan.connections} connections, {plan.seconds:g} s, "
            f"{plan.ingestion_jobs} fresh jobs per run, each sent its preview-stage and "
            f"final-stage callback (JSON envelope, {sample} bytes) by blocks of {BLOCK} jobs, "
            f"every {DUPLICATE_EVERY}th message followed by a repeat; the same bodies go to the "
            "references. Requests beyond the prepared list start it again (more duplicates).",
            f"Outcomes stored: {outcomes}.",
            "",
            "CPU during the last run of each (cores):",
            *[f"- {name}: {line}" for name, line in cpu_lines.items()],
        ]
        kit.purge(kit.parked_queue)
        kit.findings.conditions.append(("1. ingestion", started, load_average()))
        return "\n".join(out)

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


def start_web(kit: Kit, workers: int) -> str:
    """A gunicorn for the callback loads. Its follow-up tasks (media data of the jobs it
    completes) go to a queue no worker reads, emptied at the end, so they never reach the
    end-to-end measurement."""
    port = free_port()
    name = f"web-{workers}"
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
