"""`usage`: generations counted today against the budgets, and whether submissions wait."""

from __future__ import annotations

import json
from typing import Any

import click

from webhook_app.tools.cli.common import api_call, connect, with_connection


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON.")
@with_connection
def usage(as_json: bool, url: str | None, token: str | None) -> None:
    """Generations counted today against the daily budgets, and whether submissions wait."""
    client = connect(url, token)
    counted = api_call(client.usage)
    upstream = api_call(client.upstream)
    if as_json:
        click.echo(json.dumps({**counted, "upstream": upstream}, indent=2))
        return

    def line(label: str, budget: dict[str, Any]) -> str:
        limit = "no limit" if budget["limit"] is None else f"limit {budget['limit']}"
        return f"{label:<22} {budget['used']:>6} used today  ({limit})"

    click.echo(f"day {counted['day']} (UTC), budgets reset at {counted['resets_at']}")
    click.echo(line("deployment", counted["deployment"]))
    if counted["token"] is not None:
        click.echo(line(f"token {counted['token']['id']}", counted["token"]))
    if upstream["paused"]:
        click.echo(
            f"submissions paused since {upstream['since']}: the upstream refuses the "
            f"credentials; next probe at {upstream['next_probe_at']}"
        )
    else:
        click.echo("submissions: running")
