"""job_items pages keep room for their rows' next versions

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05

An item is written three or four times after its insert (its id and preview, the final
preview, its size), never in an indexed column. With room left on its page, PostgreSQL
writes each new version there and touches none of the table's three indexes (a heap-only
update). New pages only: the pages already full fill up no further.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE job_items SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE job_items RESET (fillfactor)")
