"""The audit log in SQL: entries written inside the transaction of the change they record, read newest first."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.sql.database import Database
from adapters.sql.models import AuditRecord, storable
from pilot_core.access import Actor, Role
from pilot_core.audit import AuditAction, AuditEntry


def record(
    session: Session,
    actor: Actor,
    action: AuditAction,
    target: str,
    *,
    demonstration_id: int | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an entry to the session's transaction: it commits, or rolls back, with the change it describes."""
    session.add(
        AuditRecord(
            at=dt.datetime.now(dt.UTC),
            actor=actor.name,
            actor_role=actor.role.value if actor.role else None,
            actor_organisation=actor.organisation,
            actor_key_id=actor.key_id,
            action=action.value,
            target=target,
            demonstration_id=demonstration_id,
            reason=reason,
            details=details or {},
        )
    )


def _entry(row: AuditRecord) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        at=row.at,
        actor=Actor(
            row.actor, Role(row.actor_role) if row.actor_role else None, row.actor_organisation, row.actor_key_id
        ),
        action=AuditAction(row.action),
        target=row.target,
        demonstration_id=row.demonstration_id,
        reason=row.reason,
        details=dict(row.details),
    )


class AuditLog:
    def __init__(self, database: Database) -> None:
        self._db = database

    def entries(
        self, demonstration_id: int | None = None, *, limit: int = 100, before_id: int | None = None
    ) -> list[AuditEntry]:
        """Newest first; of one demonstration, or of everything. ``before_id`` pages back through older entries."""
        query = select(AuditRecord).order_by(AuditRecord.id.desc()).limit(limit)
        if demonstration_id is not None:
            query = query.where(AuditRecord.demonstration_id == demonstration_id)
        if before_id is not None and storable(before_id):  # beyond every id: older than all of them
            query = query.where(AuditRecord.id < before_id)
        with self._db.transaction() as session:
            return [_entry(row) for row in session.scalars(query)]
