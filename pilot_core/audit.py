"""The audit trail: who changed what, when, and why.

Every write through the API or the command line leaves one entry, written in the
same transaction as the change itself, and entries are never altered (the
database refuses). Plan changes record each changed value by its JSON path, so
an evaluator reads what moved without diffing two documents by hand.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any

from pilot_core.access import Actor

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
