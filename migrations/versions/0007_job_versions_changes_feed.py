"""job versions and the changes feed

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Constant defaults: PostgreSQL adds the columns without rewriting the table. Jobs that
    # exist already are version 1 and come first in the changes feed, in id order.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))
        batch.add_column(
            sa.Column("change_seq", sa.BigInteger(), server_default="0", nullable=False)
        )
    op.create_index("ix_jobs_change_seq_id", "jobs", ["change_seq", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_change_seq_id", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("change_seq")
        batch.drop_column("version")
