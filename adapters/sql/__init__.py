"""Relational storage: demonstrations and their plan versions, organisations and API keys, the audit log,
hourly roll-ups, cached results.

SQLite by default (one file in the state folder), PostgreSQL where several
processes share it. The schema is owned by the Alembic migrations in
``migrations/``; ``Database.upgrade()`` applies them.
"""

from adapters.sql.access import AccessRepository, ApiKey, Organisation
from adapters.sql.audit import AuditLog
from adapters.sql.database import Database, default_url
from adapters.sql.errors import (
    AmendmentNeedsReason,
    DuplicateOrganisation,
    DuplicateSlug,
    FrozenByAnother,
    InvalidKeyScope,
    InvalidSlug,
    NotFound,
    NotFrozenYet,
    OwnerIsNotAParticipant,
    PlanFrozen,
    RepositoryError,
    UnknownOrganisation,
)
from adapters.sql.repository import (
    AccountedDaysRewritten,
    DemonstrationRepository,
    HourStamp,
    PlanVersion,
    RangeSummary,
    ResultCache,
    RollupRepository,
    StoredDemonstration,
    fingerprint_of,
)

__all__ = [
    "AccessRepository",
    "AccountedDaysRewritten",
    "AmendmentNeedsReason",
    "ApiKey",
    "AuditLog",
    "Database",
    "DemonstrationRepository",
    "DuplicateOrganisation",
    "DuplicateSlug",
    "FrozenByAnother",
    "HourStamp",
    "InvalidKeyScope",
    "InvalidSlug",
    "NotFound",
    "NotFrozenYet",
    "Organisation",
    "OwnerIsNotAParticipant",
    "PlanFrozen",
    "PlanVersion",
    "RangeSummary",
    "RepositoryError",
    "ResultCache",
    "RollupRepository",
    "StoredDemonstration",
    "UnknownOrganisation",
    "default_url",
    "fingerprint_of",
]
