"""Device-days accounted under a plan's rules and calendar, kept so that a plant's comparison reads them rather
than accounting every device-hour again; roll-ups keep the bits of their fingerprint that a day's check sums.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FINGERPRINT_BITS_HEX = 12  # pilot_core.accounted_days: a migration keeps its own copy, as the code may move on


def upgrade() -> None:
    with op.batch_alter_table("rollups") as table:
        table.add_column(sa.Column("fingerprint_bits", sa.BigInteger(), nullable=True))
    rollups = sa.table(
        "rollups",
        sa.column("site", sa.String),
        sa.column("line", sa.String),
        sa.column("device", sa.String),
        sa.column("hour_start_ms", sa.BigInteger),
        sa.column("fingerprint", sa.String),
        sa.column("fingerprint_bits", sa.BigInteger),
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(rollups.c.site, rollups.c.line, rollups.c.device, rollups.c.hour_start_ms, rollups.c.fingerprint)
    ).all()
    if rows:
        connection.execute(
            rollups.update()
            .where(
                rollups.c.site == sa.bindparam("s"),
                rollups.c.line == sa.bindparam("l"),
                rollups.c.device == sa.bindparam("d"),
                rollups.c.hour_start_ms == sa.bindparam("t"),
            )
            .values(fingerprint_bits=sa.bindparam("b")),
            [{"s": s, "l": li, "d": d, "t": t, "b": int(f[:_FINGERPRINT_BITS_HEX], 16)} for s, li, d, t, f in rows],
        )
    op.create_index(
        "ix_rollups_summaries",
        "rollups",
        ["site", "line", "device", "hour_start_ms", "fingerprint_bits", "computed_at_ms", "late_at_ms"],
    )
    op.create_table(
        "rollup_accounts",
        sa.Column("site", sa.String(128), nullable=False),
        sa.Column("line", sa.String(128), nullable=False),
        sa.Column("device", sa.String(128), nullable=False),
        sa.Column("accounting", sa.String(64), nullable=False),
        sa.Column("day_start_ms", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hours", sa.BigInteger(), nullable=False),
        sa.Column("fingerprint_sum", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.LargeBinary(), nullable=False),
        sa.Column("detail", sa.LargeBinary(), nullable=False),
        sa.Column("computed_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "site", "line", "device", "accounting", "day_start_ms", name=op.f("pk_rollup_accounts")
        ),
    )


def downgrade() -> None:
    op.drop_table("rollup_accounts")
    op.drop_index("ix_rollups_summaries", table_name="rollups")
    with op.batch_alter_table("rollups") as table:
        table.drop_column("fingerprint_bits")
