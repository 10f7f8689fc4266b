"""Subscriptions (who is told when a job finishes) and the notifications sent to them."""

from __future__ import annotations

import json

import click

from webhook_app.tools.cli.common import api_call, connect, json_option, with_connection


@click.group()
def subscriptions() -> None:
    """Who is told (Standard Webhooks) when a job finishes."""


@subscriptions.command("create")
@click.argument("endpoint", metavar="URL")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["completed", "failed", "timed_out"]),
    help="Only jobs that end so (repeatable; default: all three).",
)
@click.option("--metadata", default=None, help="Only jobs whose metadata holds this JSON object.")
@click.option("--description", default=None)
@with_connection
def create_subscription(
    endpoint: str,
    statuses: tuple[str, ...],
    metadata: str | None,
    description: str | None,
    **connection: str | None,
) -> None:
    """Subscribe URL; prints the signing secret, which is shown only this once."""
    meta = json_option("--metadata", metadata)
    client = connect(connection["url"], connection["token"])
    created = api_call(
        lambda: client.create_subscription(
            endpoint, statuses=list(statuses) or None, metadata=meta, description=description
        )
    )
    click.echo(json.dumps(created, indent=2))
    click.echo("Keep the secret: it is not shown again.", err=True)


@subscriptions.command("list")
@with_connection
def list_subscriptions(**connection: str | None) -> None:
    """List subscriptions (without their secrets)."""
    client = connect(connection["url"], connection["token"])
    for subscription in api_call(client.subscriptions):
        filters = []
        if subscription.get("statuses"):
            filters.append("status in " + ",".join(subscription["statuses"]))
        if subscription.get("metadata"):
            filters.append("metadata " + json.dumps(subscription["metadata"]))
        click.echo(f"{subscription['id']}  {subscription['url']}  {'; '.join(filters) or 'all'}")


@subscriptions.command("delete")
@click.argument("subscription_id")
@with_connection
def delete_subscription(subscription_id: str, **connection: str | None) -> None:
    """Delete a subscription and its notifications."""
    client = connect(connection["url"], connection["token"])
    api_call(lambda: client.delete_subscription(subscription_id))
    click.echo(f"deleted {subscription_id}")


@click.group()
def notifications() -> None:
    """Notifications sent to subscribers: list, show with attempts, replay."""


@notifications.command("list")
@click.option("--job", "job_id", default=None)
@click.option("--subscription", "subscription_id", default=None)
@click.option("--state", type=click.Choice(["pending", "delivered", "failed"]), default=None)
@with_connection
def list_notifications(
    job_id: str | None, subscription_id: str | None, state: str | None, **connection: str | None
) -> None:
    """List notifications, newest first."""
    client = connect(connection["url"], connection["token"])
    found = api_call(
        lambda: client.notifications(job_id=job_id, subscription_id=subscription_id, state=state)
    )
    for n in found:
        error = f"  ({n['last_error']})" if n.get("last_error") else ""
        click.echo(
            f"{n['id']}  {n['type']:<14}  {n['state']:<9}  {n['attempts']} attempts  "
            f"job {n['job_id']}{error}"
        )


@notifications.command("show")
@click.argument("notification_id")
@with_connection
def show_notification(notification_id: str, **connection: str | None) -> None:
    """Show a notification with its payload and every attempt."""
    client = connect(connection["url"], connection["token"])
    click.echo(json.dumps(api_call(lambda: client.notification(notification_id)), indent=2))


@notifications.command("replay")
@click.argument("notification_id")
@with_connection
def replay_notification(notification_id: str, **connection: str | None) -> None:
    """Send a notification again (same webhook-id, fresh signature and attempts)."""
    client = connect(connection["url"], connection["token"])
    replayed = api_call(lambda: client.replay_notification(notification_id))
    click.echo(f"{replayed['id']}  {replayed['state']}  queued again")
