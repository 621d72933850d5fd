"""Tables. The migrations own the schema; these mirror them (a test compares the two)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pilot_core.ids import MAX_ID_LENGTH

SLUG_LENGTH = 100
HASH_LENGTH = 71  # "sha256:" and 64 hex digits
NAME_LENGTH = 200
KEY_ID_LENGTH = 32
ROLES = ("startup", "factory_manager", "evaluator", "admin")  # pilot_core.access.Role; a test keeps them equal


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite (which keeps no zone) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"refusing a naive datetime {value.isoformat()}: give it a time zone")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    # Named constraints, so that later migrations can drop or alter them on every backend.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class DemonstrationRecord(Base):
    __tablename__ = "demonstrations"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(SLUG_LENGTH), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class PlanVersionRecord(Base):
    """One version of a plan. Triggers (see migration 0001) refuse UPDATE and DELETE of frozen rows."""

    __tablename__ = "plan_versions"
    __table_args__ = (
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("(frozen_at IS NULL) = (NOT frozen)", name="frozen_at_iff_frozen"),
        CheckConstraint(
            "version = 1 OR (frozen AND reason IS NOT NULL AND length(trim(reason)) > 0)",
            name="amendment_frozen_with_reason",
        ),
    )

    demonstration_id: Mapped[int] = mapped_column(ForeignKey("demonstrations.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    plan: Mapped[str] = mapped_column(Text)  # canonical_json(plan): exactly the text that was hashed
    plan_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    frozen: Mapped[bool]
    frozen_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class CachedResultRecord(Base):
    __tablename__ = "result_cache"
    __table_args__ = (
        ForeignKeyConstraint(
            ["demonstration_id", "plan_version"],
            ["plan_versions.demonstration_id", "plan_versions.version"],
            ondelete="CASCADE",
        ),
    )

    demonstration_id: Mapped[int] = mapped_column(primary_key=True)
    plan_version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the caller's fingerprint
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


# Roll-ups are written and read in bulk through Core: no ORM identity map for thousands of rows.
rollups = Table(
    "rollups",
    Base.metadata,
    Column("site", String(MAX_ID_LENGTH), primary_key=True),
    Column("line", String(MAX_ID_LENGTH), primary_key=True),
    Column("device", String(MAX_ID_LENGTH), primary_key=True),
    Column("hour_start_ms", BigInteger, primary_key=True, autoincrement=False),
    # DeviceHour.to_json(): what the device did, with no plan decisions, so plan amendments never invalidate it.
    Column("hour", Text, nullable=False),
    Column("fingerprint", String(64), nullable=False),  # SHA-256 of the hour's text
    Column("computed_at_ms", BigInteger, nullable=False),  # epoch ms: compared with hour ends, read by the thousand
    # count(*) of the hour's fields in InfluxDB when it was read (NULL: not counted): late data moves it.
    Column("source_values", BigInteger, nullable=True),
    Column("late_at_ms", BigInteger, nullable=True),  # when data that came after the hour had settled was taken in
    # pilot_core.accounted_days.fingerprint_bits(fingerprint): summed per device-day, it tells whether an accounted
    # day still holds the hours stored now, from one aggregate query rather than every fingerprint.
    Column("fingerprint_bits", BigInteger, nullable=True),
    # What the per-window and per-day aggregates read, so that they scan this index and not the hours' text.
    Index(
        "ix_rollups_summaries",
        "site",
        "line",
        "device",
        "hour_start_ms",
        "fingerprint_bits",
        "computed_at_ms",
        "late_at_ms",
    ),
)

# A device's stored hours of one UTC day accounted under a plan's rules and calendar (pilot_core.accounted_days),
# so that a comparison reads accounted days instead of accounting every device-hour again. Valid while the
# day's stored hours still count ``hours`` and sum ``fingerprint_bits`` to ``fingerprint_sum``.
rollup_accounts = Table(
    "rollup_accounts",
    Base.metadata,
    Column("site", String(MAX_ID_LENGTH), primary_key=True),
    Column("line", String(MAX_ID_LENGTH), primary_key=True),
    Column("device", String(MAX_ID_LENGTH), primary_key=True),
    Column("accounting", String(64), primary_key=True),  # accounting_key(rules, calendar)
    Column("day_start_ms", BigInteger, primary_key=True, autoincrement=False),
    Column("hours", BigInteger, nullable=False),
    Column("fingerprint_sum", BigInteger, nullable=False),
    Column("day", LargeBinary, nullable=False),  # AccountedDay, msgpack
    Column("detail", LargeBinary, nullable=False),  # DayDetail, msgpack: read only for days cut by a window
    Column("computed_at_ms", BigInteger, nullable=False),
)

# One row per line, counting the writes to its roll-ups (in the same transaction as each): a result whose
# count has not moved saw the same hours, known from one row rather than an aggregate over every hour.
rollup_marks = Table(
    "rollup_marks",
    Base.metadata,
    Column("site", String(MAX_ID_LENGTH), primary_key=True),
    Column("line", String(MAX_ID_LENGTH), primary_key=True),
    Column("changes", BigInteger, nullable=False),
)


class OrganisationRecord(Base):
    """A startup, a factory, an evaluating body or the operator: whoever holds API keys."""

    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(SLUG_LENGTH), unique=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class ApiKeyRecord(Base):
    """An API key: only the SHA-256 of its secret is kept, so the database never holds a usable key."""

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint(f"role IN {ROLES}", name="known_role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key_id: Mapped[str] = mapped_column(String(KEY_ID_LENGTH), unique=True)  # the public part of the key
    secret_sha256: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))  # who holds it: a person or a system
    role: Mapped[str] = mapped_column(String(32))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="RESTRICT"))
    demonstration_id: Mapped[int | None] = mapped_column(ForeignKey("demonstrations.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class SignInLinkRecord(Base):
    """A one-time console sign-in link: only the SHA-256 of its token is kept; it signs in as its API key."""

    __tablename__ = "sign_in_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class ConsoleSessionRecord(Base):
    """A signed-in console browser: only the SHA-256 of its session token is kept; it acts as its API key, so
    revoking (or deleting) the key ends it. Every API replica reads the same rows."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)  # the absolute end, however busy


class DemonstrationOrganisationRecord(Base):
    """An organisation's part in a demonstration: its one owner (the startup that runs it), or a participant."""

    __tablename__ = "demonstration_organisations"
    __table_args__ = (
        CheckConstraint("relation IN ('owner', 'participant')", name="known_relation"),
        # One owner per demonstration.
        Index(
            "ix_demonstration_organisations_one_owner",
            "demonstration_id",
            unique=True,
            sqlite_where=text("relation = 'owner'"),
            postgresql_where=text("relation = 'owner'"),
        ),
    )

    demonstration_id: Mapped[int] = mapped_column(ForeignKey("demonstrations.id", ondelete="CASCADE"), primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), primary_key=True)
    relation: Mapped[str] = mapped_column(String(16))
    added_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class AuditRecord(Base):
    """One change, never altered: triggers (see migration 0002) refuse UPDATE and DELETE."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(NAME_LENGTH))
    actor_role: Mapped[str | None] = mapped_column(String(32))
    actor_organisation: Mapped[str | None] = mapped_column(String(SLUG_LENGTH))
    actor_key_id: Mapped[str | None] = mapped_column(String(KEY_ID_LENGTH))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(Text)
    # No foreign key: the trail outlives whatever it names.
    demonstration_id: Mapped[int | None] = mapped_column(index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


def storable(key: int) -> bool:
    """Whether ``key`` fits an id or version column: 32-bit on PostgreSQL (``Mapped[int]``), where a larger number
    fails the statement (integer out of range); so it names nothing, as on SQLite."""
    return -(2**31) <= key < 2**31
