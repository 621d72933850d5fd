"""Relational storage: demonstrations and their plan versions, hourly roll-ups, cached results.

SQLite by default (one file in the state folder), PostgreSQL where several
processes share it. The schema is owned by the Alembic migrations in
``migrations/``; ``Database.upgrade()`` applies them.
"""

from adapters.sql.database import Database, default_url
from adapters.sql.errors import (
    AmendmentNeedsReason,
    DuplicateSlug,
    InvalidSlug,
    NotFound,
    NotFrozenYet,
    PlanFrozen,
    RepositoryError,
)
from adapters.sql.repository import (
    DemonstrationRepository,
    HourStamp,
    PlanVersion,
    RangeSummary,
    ResultCache,
    RollupRepository,
    StoredDemonstration,
)

__all__ = [
    "AmendmentNeedsReason",
    "Database",
    "DemonstrationRepository",
    "DuplicateSlug",
    "HourStamp",
    "InvalidSlug",
    "NotFound",
    "NotFrozenYet",
    "PlanFrozen",
    "PlanVersion",
    "RangeSummary",
    "RepositoryError",
    "ResultCache",
    "RollupRepository",
    "StoredDemonstration",
    "default_url",
]
