"""Roll-ups remember how many values InfluxDB held for their hour, and when late data made them change; each
line counts the writes to its roll-ups.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rollups") as table:
        # count(*) of the hour's fields in InfluxDB when it was read: a settled hour whose count moved got late data.
        table.add_column(sa.Column("source_values", sa.BigInteger(), nullable=True))
        # When data that arrived after the hour had settled was last taken in (epoch ms); NULL: never.
        table.add_column(sa.Column("late_at_ms", sa.BigInteger(), nullable=True))
    op.create_table(
        "rollup_marks",
        sa.Column("site", sa.String(128), nullable=False),
        sa.Column("line", sa.String(128), nullable=False),
        sa.Column("changes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("site", "line", name=op.f("pk_rollup_marks")),
    )


def downgrade() -> None:
    op.drop_table("rollup_marks")
    with op.batch_alter_table("rollups") as table:
        table.drop_column("late_at_ms")
        table.drop_column("source_values")
