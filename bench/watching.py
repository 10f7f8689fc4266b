"""6. A tool watching running jobs every few seconds, three ways: get-one per job, conditional
get-one per job (mostly 304), and the changes feed, with the bare lookup beside them."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, select

from bench import database
from bench.figures import Figure, percentile, ratio, verdict
from bench.http_load import write_requests
from bench.kit import Kit, Measured
from bench.system import CpuMeter, load_average
from webhook_app.infra.db import Database
from webhook_app.models import Job
from webhook_app.services import feed
from webhook_app.tools.client import Client

FIRST_ID = 90_000_000  # far above the other sections' jobs
UNCHANGED = '"1.1"'  # the ETag of a bulk-loaded job: version 1
GRACE = 30.0  # seconds the last changes are waited for, past one interval
# Rounds of get-one over every watched job before the measured loads: a tool asks about each
# job every interval, so each web process has served it before (its answer cache, by version).
# A request lands on either process; after 5 rounds each has seen 97% of the jobs.
WARM_ROUNDS = 5


class Watching:
    def __init__(self, kit: Kit) -> None:
        self.kit = kit

    def run(self) -> str:
        kit, plan = self.kit, self.kit.plan
        started = load_average()
        count, interval = plan.watched_jobs, plan.watch_interval
        url = kit.stack.env["DATABASE_URL"]
        start = datetime.now(UTC) - timedelta(hours=1)
        database.load_jobs(url, FIRST_ID, count, start=start, submitted_only=True)
        ids = [database.public_id(FIRST_ID + n) for n in range(count)]
        reference = kit.reference()
        files = {
            "get-one": self.file("watch-get", [("GET", f"/api/v1/jobs/{i}", None) for i in ids]),
            "conditional": self.file(
                "watch-conditional",
                [("GET", f"/api/v1/jobs/{i}", None, f"If-None-Match: {UNCHANGED}") for i in ids],
            ),
            "bare": self.file("watch-bare", [("GET", f"/bare/jobs/{i}", None) for i in ids]),
        }
        rate = {name: Figure() for name in files}
        cpu = {name: Figure() for name in files}  # ms of CPU per request, serving processes
        database_cpu = {name: Figure() for name in files}
        first = self.first_rounds(files["get-one"], count * WARM_ROUNDS)
        for _ in range(plan.query_reps or plan.reps):
            for name, requests_file in files.items():
                target, group = (
                    (reference, "reference") if name == "bare" else (kit.stack.url, "web")
                )
                measured = kit.load(target, requests_file, auth=kit.authorization)
                if measured.load.errors:
                    kit.findings.unmet.append(f"watching, {name}: {measured.load.errors} errors")
                rate[name].add(measured.load.per_second)
                cpu[name].add(measured.cpu_ms(group))
                database_cpu[name].add(measured.cpu_ms("postgres"))
        polls = {mode: self.watch_feed(url, ids, long_poll=mode == "long-poll") for mode in FEED}

        needed = count / interval  # requests per second of polling each job
        per_minute = {
            name: cpu[name].median * needed * 60 / 1000 for name in ("get-one", "conditional")
        }
        out = [
            f"A tool watches {count:,} running jobs, asking every {interval:g} s. Per-job "
            f"polling needs {needed:,.0f} requests/s; the figures below are measured at full "
            f"load ({plan.connections} connections) and scaled to that rate.",
            "",
            "| way | requests/s of watching | service CPU per request (ms) | service CPU per "
            "minute of watching (s) | vs get-one per job | database CPU per request (ms) | "
            "change seen after (s) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        out.append(
            f"| get-one per job, first round (not measured below) | capacity "
            f"{first.load.per_second:.0f} | {first.cpu_ms('web'):.3f} | | | "
            f"{first.cpu_ms('postgres'):.3f} | |"
        )
        for name, label in (
            ("get-one", "get-one per job"),
            ("conditional", "conditional get-one (304)"),
        ):
            out.append(
                f"| {label} | {needed:,.0f} (capacity {rate[name].show()}) | {cpu[name].show(3)} "
                f"| {per_minute[name]:.1f} | {per_minute['get-one'] / per_minute[name]:.1f}x | "
                f"{database_cpu[name].show(3)} | up to {interval:g} (the interval) |"
            )
        feed_minute = {}
        for mode, (requests_per_s, minute, latency, web_ms) in polls.items():
            feed_minute[mode] = minute
            out.append(
                f"| changes feed, {FEED[mode]} | {requests_per_s.show(2)} | {web_ms.show(3)} | "
                f"{minute.show(2)} | {per_minute['get-one'] / minute.median:,.0f}x | n/a | "
                f"p50 {percentile(latency, 0.5):.2f}, p99 {percentile(latency, 0.99):.2f}, "
                f"max {max(latency, default=float('nan')):.2f} |"
            )
        out.append(
            f"| bare lookup (reference) | capacity {rate['bare'].show()} | "
            f"{cpu['bare'].show(3)} | {cpu['bare'].median * needed * 60 / 1000:.1f} | | "
            f"{database_cpu['bare'].show(3)} | |"
        )
        cheaper = per_minute["get-one"] / feed_minute["every"].median
        # A change just after a look is seen at the next one: one interval, plus the request.
        seen_in_time = all(percentile(p[2], 0.99) <= interval + 0.5 for p in polls.values())
        cheap_304 = cpu["conditional"].median < cpu["bare"].median
        fast_get = ratio(cpu["bare"], cpu["get-one"])
        for met, what in (
            (cheaper >= 100, f"feed vs per-job polling: {cheaper:,.0f}x"),
            (seen_in_time, "a change seen within one interval"),
            (cheap_304, "a 304 cheaper than the bare lookup"),
            (fast_get >= 1.0, f"get-one CPU vs the bare lookup: {fast_get:.2f}x"),
        ):
            if not met:
                kit.findings.unmet.append(f"watching: {what}")
        out += [
            "",
            f"- The feed against polling every job: {cheaper:,.0f}x less service CPU per minute "
            f"(target ≥ 100x) {verdict(cheaper >= 100)}; changes seen within one interval "
            f"(p99 ≤ {interval:g} s + 0.5 s for the request, both ways) {verdict(seen_in_time)}. "
            "On PostgreSQL a page never reads past the oldest transaction still writing on the "
            "server: a stalled writer anywhere on it (this machine is shared) delays the feed.",
            f"- A 304 costs {cpu['conditional'].median:.3f} ms of service CPU, the bare lookup "
            f"{cpu['bare'].median:.3f} ms (target: cheaper) {verdict(cheap_304)}; get-one "
            f"costs {cpu['get-one'].median:.3f} ms: {fast_get:.2f}x the bare lookup's CPU per "
            f"request (target ≥ 1.0x) {verdict(fast_get >= 1.0)}; in requests/s "
            f"{ratio(rate['get-one'], rate['bare']):.2f}x.",
            f"- While the feed is watched, {plan.watch_changes} of the jobs change every "
            f"{interval:g} s (written to the database by the kit, as workers would); the service "
            "CPU of a feed minute is what gunicorn used over the whole window, idle time "
            f"included ({plan.watch_seconds:g} s per run). A change is seen when the tool "
            "first reads the job at that version or later.",
            "- The per-job ways are measured against unchanged jobs (the conditional one sends "
            f"the ETag of version 1, {UNCHANGED}, so every answer is a 304), once the tool has "
            f"asked about every job {WARM_ROUNDS} times: what a tool watching them does from its "
            "second interval on. The first round is shown apart: there, most requests are the "
            "first a web process serves for the job, so it reads the items and serializes the "
            "answer, which it keeps by the job's version; later ones cost a version lookup.",
        ]
        out += ["", self.explain(url)]
        kit.findings.conditions.append(("6. watching", started, load_average()))
        return "\n".join(out)

    def explain(self, url: str) -> str:
        """EXPLAIN ANALYZE what a feed page sends, from a cursor near the end of the feed."""
        db = Database(url)
        captured: list[tuple[str, Any]] = []

        def capture(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
            captured.append((statement, parameters))

        with db.connection() as connection:
            recent = connection.execute(
                select(Job.change_seq, Job.id)
                .order_by(Job.change_seq.desc(), Job.id.desc())
                .limit(1)
                .offset(50)
            ).one()
        cursor = feed.encode((recent.change_seq, recent.id))
        blocks, sequential = [], False
        for title, status in (("no filter", None), ("status=submitted", "submitted")):
            captured.clear()
            for engine in db.engines:
                event.listen(engine, "before_cursor_execute", capture)
            with db.connection() as connection:
                feed.changes_since(connection, cursor, limit=50, status=status)
            for engine in db.engines:
                event.remove(engine, "before_cursor_execute", capture)
            statement, parameters = captured[1]  # after the horizon's probe: the page
            plan = database.explain(db.engine, statement, parameters)
            sequential |= any("Seq Scan" in line for line in plan)
            blocks.append(f"{title}:\n\n```\n" + "\n".join(plan) + "\n```\n")
        db.dispose()
        if sequential:
            self.kit.findings.unmet.append("a feed query plan has a sequential scan")
        verdict_line = "Index scans only: " + ("**no**" if sequential else "yes") + "."
        return (
            "### EXPLAIN of a feed page, 50 changes from the end\n\n"
            + verdict_line
            + ("\n\n" + "\n".join(blocks))
        )

    def first_rounds(self, requests_file: Path, requests: int) -> Measured:
        """The first load of get-one over jobs no web process has served yet (measured), then
        more until `requests` were answered in all (not measured)."""

        def load() -> Measured:
            return self.kit.load(self.kit.stack.url, requests_file, auth=self.kit.authorization)

        first = load()
        answered = first.load.requests
        while answered < requests:
            answered += load().load.requests
        return first

    def file(self, name: str, lines: Sequence[Sequence[str | None]]) -> Path:
        return write_requests(self.kit.workdir / f"{name}.txt", lines)

    def watch_feed(
        self, url: str, ids: list[str], *, long_poll: bool
    ) -> tuple[Figure, Figure, list[float], Figure]:
        """Watch through the feed while jobs change; requests/s, CPU s per minute, latencies,
        and ms of CPU per feed request."""
        kit, plan = self.kit, self.kit.plan
        requests, minute, per_request = Figure(), Figure(), Figure()
        latencies: list[float] = []
        for _ in range(plan.query_reps or plan.reps):
            changed: dict[tuple[str, int], float] = {}
            client = Client(kit.stack.url, kit.stack.token, timeout=30)
            watcher = FeedWatcher(client, plan.watch_interval, long_poll=long_poll)
            meter = CpuMeter(kit.cpu_groups)
            meter.start()
            watcher.start()
            self.change_jobs(url, ids, changed, plan.watch_seconds)
            # The last changes are seen within an interval, unless a writer elsewhere on the
            # server holds the feed back: then they are waited for, a while.
            deadline = time.monotonic() + plan.watch_interval + GRACE
            time.sleep(plan.watch_interval + 1)
            while not watcher.saw_all(changed) and time.monotonic() < deadline:
                time.sleep(0.2)
            watcher.stop.set()
            watcher.join(30)
            share = meter.stop()
            web_seconds = share.cores.get("web", 0.0) * share.wall
            requests.add(watcher.asked / share.wall)
            minute.add(web_seconds / share.wall * 60)
            per_request.add(web_seconds * 1000 / max(1, watcher.asked))
            missed = 0
            for (public_id, version), at in changed.items():
                reads = [when for v, when in watcher.seen.get(public_id, []) if v >= version]
                if reads:
                    latencies.append(max(0.0, reads[0] - at))
                else:
                    missed += 1
            if missed:
                kit.findings.unmet.append(
                    f"watching: {missed} changes not seen by the feed within {GRACE:g} s"
                )
        return requests, minute, latencies, per_request

    def change_jobs(
        self, url: str, ids: list[str], changed: dict[tuple[str, int], float], seconds: float
    ) -> None:
        """Change plan.watch_changes jobs per interval, evenly, for `seconds`; note when."""
        plan = self.kit.plan
        pause = plan.watch_interval / plan.watch_changes
        db = Database(url)
        began, n = time.monotonic(), 0
        try:
            while time.monotonic() - began < seconds:
                public_id = ids[(n * 7919) % len(ids)]
                with db.transaction() as session:
                    job = session.scalars(
                        select(Job).where(Job.public_id == public_id).with_for_update()
                    ).one()
                    job.upstream_status = f"step {n}"
                    job.updated_at = datetime.now(UTC)
                    session.flush()
                    version = job.version
                changed[(public_id, version)] = time.monotonic()
                n += 1
                time.sleep(max(0.0, began + n * pause - time.monotonic()))
        finally:
            db.dispose()


class FeedWatcher(threading.Thread):
    """The tool: reads the feed from now on, every interval or held (long-poll)."""

    def __init__(self, client: Client, interval: float, *, long_poll: bool) -> None:
        super().__init__(daemon=True)
        self.client, self.interval, self.long_poll = client, interval, long_poll
        self.cursor = client.changes("now")["next_cursor"]
        self.stop = threading.Event()
        self.asked = 0
        self.seen: dict[str, list[tuple[int, float]]] = {}  # each read of a job: version, when

    def saw_all(self, changed: dict[tuple[str, int], float]) -> bool:
        return all(
            any(v >= version for v, _ in self.seen.get(public_id, ()))
            for public_id, version in changed
        )

    def run(self) -> None:
        while not self.stop.is_set():
            began = time.monotonic()
            while True:
                page = self.client.changes(
                    self.cursor, limit=200, wait=5 if self.long_poll else None
                )
                self.asked += 1
                now = time.monotonic()
                for job in page["jobs"]:
                    self.seen.setdefault(job["id"], []).append((job["version"], now))
                self.cursor = page["next_cursor"]
                if not page["more"]:
                    break
            if not self.long_poll:
                self.stop.wait(max(0.0, self.interval - (time.monotonic() - began)))


FEED = {"every": "asked every interval", "long-poll": "long-polled (wait=5)"}
