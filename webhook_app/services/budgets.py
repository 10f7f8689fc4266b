"""Daily budgets of generations: the deployment's, and optionally one per API token.

Every generation is paid, so a job is counted when it is created, in the transaction that
creates it: a conditional upsert (`used < limit`) settles a race between web processes, and
a refused request rolls back whatever it counted. Days are UTC days.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Insert, Integer, String, and_, literal, or_, select, union_all
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from webhook_app.models import GenerationUsage

DEPLOYMENT = "deployment"


def token_budget_name(token_id: int) -> str:
    return f"token:{token_id}"


@dataclass(frozen=True)
class Budget:
    name: str  # "deployment" or "token:<id>"
    limit: int | None  # None: counted, never refused
    label: str  # how an error message names it


class BudgetExceeded(Exception):
    """A request over a daily budget: nothing was created."""

    def __init__(self, budget: Budget, resets_at: datetime) -> None:
        self.budget = budget
        self.resets_at = resets_at
        super().__init__(
            f"the daily budget of {budget.limit} generations of {budget.label} is used up; "
            f"it resets at {resets_at.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        )

    def seconds_left(self, now: datetime) -> int:
        return max(1, int((self.resets_at - now).total_seconds() + 0.999))

    def as_error(self) -> dict[str, Any]:
        return {
            "code": "budget_exceeded",
            "message": str(self),
            "budget": "deployment" if self.budget.name == DEPLOYMENT else "token",
            "limit": self.budget.limit,
            "resets_at": self.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


def day_of(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%d")


def resets_at(now: datetime) -> datetime:
    """The next UTC midnight."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today + timedelta(days=1)


def charge(session: Session, budgets: Iterable[Budget], *, now: datetime) -> None:
    """Count one generation against each budget, or raise BudgetExceeded for the first full one."""
    listed = list(budgets)
    statement = counting(listed, now=now, dialect=session.get_bind().dialect.name)
    counted = session.scalars(statement).all() if statement is not None else ()
    refuse_uncounted(listed, counted, now=now)


def counting(budgets: Sequence[Budget], *, now: datetime, dialect: str) -> Insert | None:
    """One statement that counts a generation against each budget with room left today and
    returns the names of those it counted (None when no budget can be counted).

    The conditional upsert settles a race between web processes; a budget's row of the day is
    made with its first generation, so a limit of 0 never makes one. Rows are locked in the
    order given (the deployment's first), so concurrent requests never wait on each other in
    a circle.
    """
    possible = [budget for budget in budgets if budget.limit is None or budget.limit > 0]
    if not possible:
        return None
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    day = day_of(now)
    # A SELECT per row rather than a VALUES list: SQLAlchemy caches its compiled form.
    rows = [
        select(
            literal(budget.name, String).label("budget"),
            literal(day, String).label("day"),
            literal(1, Integer).label("used"),
        )
        for budget in possible
    ]
    room = or_(
        *(
            GenerationUsage.budget == budget.name
            if budget.limit is None
            else and_(GenerationUsage.budget == budget.name, GenerationUsage.used < budget.limit)
            for budget in possible
        )
    )
    return (
        insert(GenerationUsage)
        .from_select(["budget", "day", "used"], union_all(*rows) if len(rows) > 1 else rows[0])
        .on_conflict_do_update(
            index_elements=["budget", "day"],
            set_={"used": GenerationUsage.used + 1},
            where=room,
        )
        .returning(GenerationUsage.budget)
    )


def refuse_uncounted(budgets: Iterable[Budget], counted: Collection[str], *, now: datetime) -> None:
    """Raise BudgetExceeded for the first budget `counting` did not count."""
    for budget in budgets:
        if budget.name not in counted:
            raise BudgetExceeded(budget, resets_at(now))


def used_today(session: Session, names: Sequence[str], *, now: datetime) -> dict[str, int]:
    """Generations counted today per budget name (0 for a budget not used yet)."""
    rows = session.execute(
        select(GenerationUsage.budget, GenerationUsage.used).where(
            GenerationUsage.budget.in_(list(names)), GenerationUsage.day == day_of(now)
        )
    ).all()
    found = {budget: used for budget, used in rows}
    return {name: found.get(name, 0) for name in names}


def usage(
    session: Session, budgets: Sequence[Budget], *, now: datetime
) -> dict[str, dict[str, Any]]:
    """Usage today and limits, for the API, the CLI and the dashboard."""
    used = used_today(session, [budget.name for budget in budgets], now=now)
    return {
        budget.name: {
            "used": used[budget.name],
            "limit": budget.limit,
            "remaining": None if budget.limit is None else max(0, budget.limit - used[budget.name]),
        }
        for budget in budgets
    }


def budgets_for(
    deployment_limit: int | None,
    *,
    token_id: int | None = None,
    token_name: str | None = None,
    token_limit: int | None = None,
) -> list[Budget]:
    """The deployment's budget, and the token's when the request came with a CLI-made token."""
    found = [Budget(DEPLOYMENT, deployment_limit, "the deployment")]
    if token_id is not None:
        label = f"API token {token_id} ({token_name})" if token_name else f"API token {token_id}"
        found.append(Budget(token_budget_name(token_id), token_limit, label))
    return found
