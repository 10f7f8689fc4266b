"""2. The query API as the table grows: get-one beside a bare lookup, list pages, EXPLAIN."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event

from bench import database
from bench.figures import Figure, ratio, verdict
from bench.http_load import write_requests
from bench.kit import Kit
from bench.system import load_average
from webhook_app.infra.db import Database
from webhook_app.services import jobs
from webhook_app.services.jobs import encode_cursor

LISTED = ("completed", "failed", "processing", "queued")


class Queries:
    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        self.rng = random.Random(7)

    def run(self) -> str:
        kit, plan = self.kit, self.kit.plan
        started = load_average()
        reference = kit.reference()
        url = kit.stack.env["DATABASE_URL"]
        origin = datetime.now(UTC) - timedelta(days=30)
        clients = plan.list_clients
        out = [
            "| jobs | get-one (req/s) | bare lookup (req/s) | ratio (target ≥ 0.8x) | "
            f"get-one p99 (ms) | list page p99 (ms), {clients[0]} client (target ≤ 25) | "
            f"list page p99 (ms), {clients[1]} clients | "
            f"list pages (req/s, {clients[1]} clients) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        loaded, p99s = 0, []
        # CPU per request (ms) of the serving processes, over every size.
        cpu_ms = {name: Figure() for name in ("get-one", "bare", "list")}
        busy = Figure()  # cores busy during the list loads
        for scale in plan.query_scales:
            # Ten milliseconds apart, oldest first: ids and creation times agree.
            start = origin + timedelta(milliseconds=10 * loaded)
            database.load_jobs(url, loaded + 1, scale - loaded, start=start, submitted_only=False)
            loaded = scale
            ids = [self.rng.randint(1, scale) for _ in range(plan.query_sample)]
            get_one = self.file(
                f"get-{scale}", [f"/api/v1/jobs/{database.public_id(n)}" for n in ids]
            )
            bare = self.file(f"bare-{scale}", [f"/bare/jobs/{database.public_id(n)}" for n in ids])
            listing = self.file(f"list-{scale}", self.list_paths(scale))
            service, baseline, get_p99 = Figure(), Figure(), Figure()
            lists = {count: Figure() for count in plan.list_clients}
            list_rate = Figure()
            for _ in range(plan.query_reps or plan.reps):
                measured = kit.load(kit.stack.url, get_one, auth=kit.authorization)
                service.add(measured.load.per_second)
                get_p99.add(measured.load.p99_ms)
                cpu_ms["get-one"].add(measured.cpu_ms("web"))
                self.check(measured.load.errors, "get-one")
                measured = kit.load(reference, bare)
                baseline.add(measured.load.per_second)
                cpu_ms["bare"].add(measured.cpu_ms("reference"))
                for count in plan.list_clients:
                    measured = kit.load(
                        kit.stack.url, listing, connections=count, auth=kit.authorization
                    )
                    lists[count].add(measured.load.p99_ms)
                    self.check(measured.load.errors, "list")
                list_rate.add(measured.load.per_second)
                cpu_ms["list"].add(measured.cpu_ms("web"))
                busy.add(measured.cpu.busy)
            one, several = (lists[count] for count in plan.list_clients)
            met = ratio(service, baseline) >= 0.8
            if not met:
                kit.findings.unmet.append(
                    f"get-one at {scale} jobs: {ratio(service, baseline):.2f}x"
                )
            if one.median > 25:
                kit.findings.unmet.append(f"list p99 at {scale} jobs: {one.median:.1f} ms")
            p99s.append(one.median)
            out.append(
                f"| {scale:,} | {service.show()} | {baseline.show()} | "
                f"{ratio(service, baseline):.2f}x {verdict(met)} | {get_p99.show(1)} | "
                f"{one.show(1)} {verdict(one.median <= 25)} | {several.show(1)} | "
                f"{list_rate.show()} |"
            )
        shares = ", ".join(f"{k} {v:.0%}" for k, v in database.STATUS_SHARE.items())
        out += [
            "",
            "Jobs are bulk-loaded (INSERT ... SELECT over generate_series, "
            f"{database.ITEMS_PER_JOB} items each; statuses {shares}). "
            f"get-one and the bare lookup: {plan.connections} connections over the same "
            f"{plan.query_sample} random jobs; the bare lookup is one SELECT by the job's key "
            "(its unique public id) turned into JSON, served by the same gunicorn settings. "
            f"List pages: {clients[0]} and {clients[1]} connections, 50 per page, newest first, "
            f"with and without a status filter ({', '.join(LISTED)}), first pages and pages at "
            "random depths down to the oldest job.",
            f"Latency across sizes (list page p99 ms, {clients[0]} client): "
            f"{' → '.join(f'{p:.1f}' for p in p99s)}.",
            "",
            f"CPU per request of the serving processes (ms, every size): get-one "
            f"{cpu_ms['get-one'].show(2)}, bare lookup {cpu_ms['bare'].show(2)}, list page "
            f"{cpu_ms['list'].show(2)}. During the list loads by {clients[1]} clients "
            f"{busy.show(2)} of {os.cpu_count()} cores were busy (all processes of the "
            "machine). A list page is "
            "one indexed query for the jobs and one for their items and archives, read as "
            "plain rows (no ORM objects) and turned into JSON; get-one is one query. Their "
            "latency is that CPU time, stretched by whatever else runs on the same cores.",
            "",
            f"### EXPLAIN of every list query, at {loaded:,} jobs",
            "",
            self.explain(url, loaded),
        ]
        kit.findings.conditions.append(("2. queries", started, load_average()))
        return "\n".join(out)

    def check(self, errors: int, what: str) -> None:
        if errors:
            self.kit.findings.unmet.append(f"{what}: {errors} errors")

    def file(self, name: str, paths: list[str]) -> Path:
        return write_requests(self.kit.workdir / f"{name}.txt", [("GET", p, None) for p in paths])

    def list_paths(self, scale: int) -> list[str]:
        paths = []
        for _ in range(self.kit.plan.query_sample):
            status = self.rng.choice((None, *LISTED))
            query = [f"status={status}"] if status else []
            query.append("limit=50")
            if self.rng.random() < 0.8:
                query.append(f"cursor={encode_cursor(self.rng.randint(1, scale))}")
            paths.append("/api/v1/jobs?" + "&".join(query))
        return paths

    def explain(self, url: str, scale: int) -> str:
        """Run each shape of list query as the API does, and EXPLAIN ANALYZE what it sent."""
        db = Database(url)
        captured: list[tuple[str, Any]] = []

        def capture(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
            captured.append((statement, parameters))

        shapes: list[tuple[str, dict[str, Any]]] = [
            ("no filter, first page", {}),
            ("no filter, deep page", {"cursor": encode_cursor(max(2, scale // 50))}),
            ("status=completed, first page", {"status": "completed"}),
            (
                "status=completed, deep page",
                {"status": "completed", "cursor": encode_cursor(max(2, scale // 50))},
            ),
            (
                "status=queued, deep page",
                {"status": "queued", "cursor": encode_cursor(max(2, scale // 10))},
            ),
        ]
        blocks, sequential = [], False
        for title, arguments in shapes:
            captured.clear()
            event.listen(db.engine, "before_cursor_execute", capture)
            with db.transaction() as session:
                jobs.list_jobs(session, limit=50, **arguments)
            event.remove(db.engine, "before_cursor_execute", capture)
            for index, (statement, parameters) in enumerate(captured):
                plan = database.explain(db.engine, statement, parameters)
                sequential |= any("Seq Scan" in line for line in plan)
                what = "jobs" if index == 0 else "their items"
                blocks.append(
                    f"{title} ({what}):\n\n```\n{statement.strip()}\n\n"
                    + "\n".join(plan)
                    + "\n```\n"
                )
        db.dispose()
        if sequential:
            self.kit.findings.unmet.append("a list query plan has a sequential scan")
        verdict_line = "Index scans only: " + (
            "**no**: a sequential scan is planned."
            if sequential
            else "yes, no sequential scan in any plan."
        )
        return verdict_line + "\n\n" + "\n".join(blocks)
