"""Demonstrations with versioned plans, hourly roll-ups, cached results.

Revision ID: 0001
Revises:
Create Date: 2026-05-01
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A frozen plan version is read-only forever, whatever client touches the database.
SQLITE_TRIGGERS = [
    f"""
    CREATE TRIGGER plan_versions_frozen_{action.lower()} BEFORE {action} ON plan_versions
    WHEN OLD.frozen
    BEGIN SELECT RAISE(ABORT, 'plan version is frozen: amend it instead'); END
    """
    for action in ("UPDATE", "DELETE")
]
POSTGRESQL_TRIGGERS = [
    """
    CREATE FUNCTION plan_versions_read_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'plan version % of demonstration % is frozen: amend it instead',
            OLD.version, OLD.demonstration_id USING ERRCODE = 'integrity_constraint_violation';
    END
    $$
    """,
    """
    CREATE TRIGGER plan_versions_frozen BEFORE UPDATE OR DELETE ON plan_versions
    FOR EACH ROW WHEN (OLD.frozen) EXECUTE FUNCTION plan_versions_read_only()
    """,
]


def _time(name: str, nullable: bool = False) -> sa.Column[dt.datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "demonstrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(100), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_demonstrations")),
        sa.UniqueConstraint("slug", name=op.f("uq_demonstrations_slug")),
    )
    op.create_table(
        "plan_versions",
        sa.Column("demonstration_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("plan", sa.Text(), nullable=False),
        sa.Column("plan_hash", sa.String(71), nullable=False),
        sa.Column("frozen", sa.Boolean(), nullable=False),
        _time("frozen_at", nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        _time("created_at"),
        sa.CheckConstraint("version >= 1", name=op.f("ck_plan_versions_version_positive")),
        sa.CheckConstraint("(frozen_at IS NULL) = (NOT frozen)", name=op.f("ck_plan_versions_frozen_at_iff_frozen")),
        sa.CheckConstraint(
            "version = 1 OR (frozen AND reason IS NOT NULL AND length(trim(reason)) > 0)",
            name=op.f("ck_plan_versions_amendment_frozen_with_reason"),
        ),
        sa.ForeignKeyConstraint(
            ["demonstration_id"],
            ["demonstrations.id"],
            name=op.f("fk_plan_versions_demonstration_id_demonstrations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("demonstration_id", "version", name=op.f("pk_plan_versions")),
    )
    op.create_table(
        "result_cache",
        sa.Column("demonstration_id", sa.Integer(), nullable=False),
        sa.Column("plan_version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        _time("created_at"),
        sa.ForeignKeyConstraint(
            ["demonstration_id", "plan_version"],
            ["plan_versions.demonstration_id", "plan_versions.version"],
            name=op.f("fk_result_cache_demonstration_id_plan_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "demonstration_id", "plan_version", "kind", "fingerprint", name=op.f("pk_result_cache")
        ),
    )
    op.create_table(
        "rollups",
        sa.Column("site", sa.String(128), nullable=False),
        sa.Column("line", sa.String(128), nullable=False),
        sa.Column("device", sa.String(128), nullable=False),
        sa.Column("hour_start_ms", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hour", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("computed_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("site", "line", "device", "hour_start_ms", name=op.f("pk_rollups")),
    )
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": SQLITE_TRIGGERS, "postgresql": POSTGRESQL_TRIGGERS}.get(dialect, []):
        op.execute(statement)


def downgrade() -> None:
    op.drop_table("rollups")
    op.drop_table("result_cache")
    op.drop_table("plan_versions")  # drops its triggers too
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION plan_versions_read_only()")
    op.drop_table("demonstrations")
