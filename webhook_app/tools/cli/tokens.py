"""Query API tokens: an operator's action, straight on the database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from webhook_app.tools.cli.common import load_settings


@contextmanager
def _database_session() -> Iterator[Any]:
    """One transaction on DATABASE_URL, for an operator's command."""
    from webhook_app.infra.db import Database

    db = Database(load_settings().database_url)
    try:
        with db.transaction() as session:
            yield session
    finally:
        db.dispose()


@click.group()
def tokens() -> None:
    """Create, list and revoke query API tokens (stored only as hashes)."""


@tokens.command("create")
@click.option("--name", required=True, help="Who or what uses it, e.g. billing-service.")
@click.option(
    "--scope",
    type=click.Choice(["read", "write"]),
    default="read",
    show_default=True,
    help="read: GET only; write: also create and refresh jobs.",
)
@click.option(
    "--daily-limit",
    type=click.IntRange(min=0),
    default=None,
    help="Generations this token may create a day (UTC), within the deployment's budget.",
)
def create_token(name: str, scope: str, daily_limit: int | None) -> None:
    """Make a token and print it once; only its hash is kept."""
    from webhook_app.models import utcnow
    from webhook_app.services.api_tokens import create_token as create

    try:
        with _database_session() as session:
            row, token = create(
                session, name=name, scope=scope, now=utcnow(), daily_limit=daily_limit
            )
            token_id = row.id
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--name") from None
    limit = f", {daily_limit} generations a day" if daily_limit is not None else ""
    # The token alone on stdout, so that scripts can capture it.
    click.echo(
        f"token {token_id} ({name}, {scope}{limit}); shown only now, keep it safe:", err=True
    )
    click.echo(token)


@tokens.command("list")
def list_tokens() -> None:
    """Every token: id, scope, created, revoked, generations today/daily limit, name."""
    from webhook_app.models import utcnow
    from webhook_app.services import budgets
    from webhook_app.services.api_tokens import list_tokens as all_tokens

    with _database_session() as session:
        rows = all_tokens(session)
        names = [budgets.token_budget_name(row.id) for row in rows]
        used = budgets.used_today(session, names, now=utcnow())
        for row, budget in zip(rows, names, strict=True):
            state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
            limit = "-" if row.daily_limit is None else str(row.daily_limit)
            today = f"{used[budget]}/{limit}"
            click.echo(
                f"{row.id:>4}  {row.scope:<5}  {row.created_at:%Y-%m-%d %H:%M}  {state:<24}  "
                f"{today:>11}  {row.name}"
            )


@tokens.command("revoke")
@click.argument("token_id", type=int)
def revoke_token(token_id: int) -> None:
    """Revoke a token now: the next request that presents it gets 401."""
    from webhook_app.models import utcnow
    from webhook_app.services.api_tokens import revoke_token as revoke

    with _database_session() as session:
        row = revoke(session, token_id, now=utcnow())
        name = row.name if row else None
    if name is None:
        raise click.ClickException(f"no token {token_id}")
    click.echo(f"token {token_id} ({name}) is revoked")
