"""The audit trail: who changed what, when, and why.

Every write through the API or the command line leaves one entry, written in the
same transaction as the change itself, and entries are never altered (the
database refuses). Plan changes record each changed value by its JSON path, so
an evaluator reads what moved without diffing two documents by hand. An entry is
written as ``AuditEntryModel`` both where the API lists it and where an evidence
bundle records it.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pilot_core.access import Actor, Role

# A changed value larger than this (a whole calendar, a list of windows) is recorded by its size only.
_MAX_VALUE_CHARS = 2000


class AuditAction(enum.StrEnum):
    DEMONSTRATION_CREATED = "demonstration.created"
    DRAFT_REPLACED = "plan.draft_replaced"
    PLAN_FROZEN = "plan.frozen"
    PLAN_AMENDED = "plan.amended"
    PARTICIPANT_ADDED = "participant.added"
    PARTICIPANT_REMOVED = "participant.removed"
    ORGANISATION_CREATED = "organisation.created"
    API_KEY_CREATED = "api_key.created"
    API_KEY_REVOKED = "api_key.revoked"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: dt.datetime
    actor: Actor
    action: AuditAction
    target: str  # what was changed, e.g. "demonstration pangyo-cobot-cell"
    demonstration_id: int | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class ActorModel(BaseModel):
    name: str
    role: Role | None = Field(description="None: a command run on the server, e.g. `pilot keys create`")
    organisation: str | None
    key_id: str | None

    @classmethod
    def of(cls, actor: Actor) -> ActorModel:
        return cls.model_validate(actor, from_attributes=True)


class AuditEntryModel(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 42,
                    "at": "2026-10-30T02:40:05.917Z",
                    "actor": {
                        "name": "Lee Startup",
                        "role": "startup",
                        "organisation": "pangyo-robotics",
                        "key_id": "9a0b1c2d3e4f",
                    },
                    "action": "plan.amended",
                    "target": "demonstration pangyo-cobot-assembly-cell",
                    "demonstration_id": 1,
                    "reason": "The evaluator asked for a 95% confidence level",
                    "details": {
                        "version_before": 1,
                        "version": 2,
                        "changes": [{"path": "confidence_level", "before": 0.9, "after": 0.95}],
                    },
                }
            ]
        }
    )

    id: int
    at: dt.datetime
    actor: ActorModel
    action: AuditAction
    target: str
    demonstration_id: int | None
    reason: str | None
    details: dict[str, Any] = Field(description="What changed; for plans, every changed value by its JSON path")

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryModel:
        return cls(
            id=entry.id,
            at=entry.at,
            actor=ActorModel.of(entry.actor),
            action=entry.action,
            target=entry.target,
            demonstration_id=entry.demonstration_id,
            reason=entry.reason,
            details=entry.details,
        )


def json_changes(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """Every value that differs between two JSON documents, as ``{"path", "before", "after"}``, in document order.

    Paths read like ``windows[1].end``; a key added or removed shows ``None`` on the side it is missing from.
    """
    if isinstance(before, dict) and isinstance(after, dict):
        changes = []
        for key in [*before, *(k for k in after if k not in before)]:
            changes += json_changes(before.get(key), after.get(key), f"{path}.{key}" if path else str(key))
        return changes
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            c for i, (b, a) in enumerate(zip(before, after, strict=True)) for c in json_changes(b, a, f"{path}[{i}]")
        ]
    if before == after and type(before) is type(after):
        return []
    return [{"path": path, "before": _shown(before), "after": _shown(after)}]


def _shown(value: Any) -> Any:
    text = repr(value)
    if len(text) <= _MAX_VALUE_CHARS:
        return value
    kind = f"{len(value)} items" if isinstance(value, list | dict) else f"{len(text)} characters"
    return f"<{type(value).__name__} of {kind}>"
