"""upstream state (pause, shared pace) and daily generation budgets

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "upstream_state",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("paused_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pause_reason", sa.JSON(), nullable=True),
        sa.Column("probe_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("probe_failures", sa.Integer(), nullable=False),
        sa.Column("probe_lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_call_at", sa.Float(), nullable=False),
        sa.Column("slow_until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_upstream_state")),
    )
    op.create_table(
        "generation_usage",
        sa.Column("budget", sa.String(length=32), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("budget", "day", name=op.f("pk_generation_usage")),
    )
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("daily_limit", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("daily_limit")
    op.drop_table("generation_usage")
    op.drop_table("upstream_state")
