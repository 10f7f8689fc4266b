"""deliveries are stored first and applied later: when, and an index of those still pending

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("outcome = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True))
    # Deliveries already kept were applied when they arrived.
    op.execute("UPDATE deliveries SET applied_at = last_received_at")
    op.create_index(
        "ix_deliveries_pending",
        "deliveries",
        ["id"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_pending", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("applied_at")
