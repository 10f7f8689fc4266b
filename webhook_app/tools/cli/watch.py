"""`watch`: live counts of jobs by status, or each change, from the changes feed."""

from __future__ import annotations

import sys
import time
from functools import partial
from typing import Any

import click

from webhook_app.states import TERMINAL
from webhook_app.tools.cli.common import api_call, connect, json_option, with_connection


@click.command()
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
    client = connect(url, token)
    filters = {"created_after": created_after, "q": q}
    if each_change:
        wanted = json_option("--metadata", metadata)
        _print_changes(client, since, once, status=status, metadata=wanted, **filters)
        return
    redraw = sys.stdout.isatty() and not once
    cursor = None if once else api_call(lambda: client.changes("now", **filters))["next_cursor"]
    while True:
        drawn = time.monotonic()
        stats = api_call(lambda: client.stats(**filters))
        _draw_counts(stats, interval, redraw)
        running = sum(n for s, n in stats["jobs"].items() if s not in TERMINAL)
        if once or (until_idle and running == 0):
            return
        while True:  # held by the server until a job changes: one request per change or 25 s
            page = api_call(partial(client.changes, cursor, wait=25, limit=1, **filters))
            if page["jobs"] or page["more"]:
                break
            cursor = page["next_cursor"]
        cursor = api_call(lambda: client.changes("now", **filters))["next_cursor"]
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
        page = api_call(lambda: client.changes(since, limit=200, **filters))
        for job in page["jobs"]:
            click.echo(line(job))
        click.echo(f"next cursor: {page['next_cursor']}", err=True)
        return
    changes = client.watch(since, **filters)
    while True:
        job = api_call(lambda: next(changes))
        click.echo(line(job))
