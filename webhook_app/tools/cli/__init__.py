"""`webhook-app`: run the parts, run everything, and talk to a running service.

The group lives here; each module holds the commands of one concern.
"""

from __future__ import annotations

import click

from webhook_app.tools.cli import jobs, processes, subscriptions, tokens, usage, watch


@click.group()
def main() -> None:
    """Order AI images from Depositphotos and track every job."""


for command in (
    processes.migrate,
    processes.serve,
    processes.worker,
    processes.beat,
    processes.sandbox,
    processes.run,
    jobs.submit,
    jobs.list_jobs,
    jobs.show_job,
    jobs.refresh_job,
    jobs.retry_job,
    jobs.cancel_job,
    watch.watch,
    usage.usage,
    tokens.tokens,
    subscriptions.subscriptions,
    subscriptions.notifications,
):
    main.add_command(command)
