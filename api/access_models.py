"""What the API says about callers, organisations, API keys and the audit trail."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from adapters.sql import ApiKey, Organisation
from pilot_core.access import Principal, Role
from pilot_core.audit import AuditEntry, AuditEntryModel

_KEY_EXAMPLE: dict[str, Any] = {
    "key_id": "3f9c2a71b0d4",
    "name": "Kim Evaluator (Gyeonggi TP)",
    "role": "evaluator",
    "organisation": "gyeonggi-evaluation",
    "demonstration": "pangyo-cobot-assembly-cell",
    "created_at": "2026-09-28T01:03:10.552Z",
    "revoked_at": None,
}


class Me(BaseModel):
    """The caller, as its key names it."""

    key_id: str
    name: str
    role: Role
    organisation: str
    demonstration_id: int | None = Field(description="The one demonstration this key is limited to, if any")

    @classmethod
    def of(cls, principal: Principal) -> Me:
        return cls.model_validate(principal, from_attributes=True)


class OrganisationModel(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"slug": "pangyo-robotics", "name": "Pangyo Robotics", "created_at": "2026-09-01T00:00:00Z"}]
        }
    )

    slug: str
    name: str
    created_at: dt.datetime

    @classmethod
    def of(cls, organisation: Organisation) -> OrganisationModel:
        return cls.model_validate(organisation, from_attributes=True)


class NewOrganisation(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"slug": "pangyo-robotics", "name": "Pangyo Robotics"}]}
    )

    slug: str = Field(min_length=1, max_length=100, description="Lower-case words joined by hyphens")
    name: str = Field(default="", max_length=200)


class ApiKeyModel(BaseModel):
    """A key as listed: never its secret."""

    model_config = ConfigDict(json_schema_extra={"examples": [_KEY_EXAMPLE]})

    key_id: str
    name: str
    role: Role
    organisation: str
    demonstration: str | None = Field(description="Slug of the one demonstration the key is limited to, if any")
    created_at: dt.datetime
    revoked_at: dt.datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyModel:
        return cls.model_validate(key, from_attributes=True)


class NewApiKey(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Kim Evaluator (Gyeonggi TP)",
                    "role": "evaluator",
                    "organisation": "gyeonggi-evaluation",
                    "demonstration": "pangyo-cobot-assembly-cell",
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=200, description="Who holds it: a person or a system")
    role: Role
    organisation: str = Field(min_length=1, max_length=100, description="Slug of the holder's organisation")
    demonstration: str | None = Field(
        default=None, max_length=100, description="Limit the key to this demonstration (id or slug)"
    )


class CreatedApiKey(ApiKeyModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_KEY_EXAMPLE | {"token": "pt_3f9c2a71b0d4_…"}]})

    token: str = Field(description="The key itself. It is shown this once and never stored: keep it safe")


class AuditPage(BaseModel):
    entries: list[AuditEntryModel] = Field(description="Newest first")
    next_before: int | None = Field(description="Pass as `before` for the next (older) page; None at the end")

    @classmethod
    def of(cls, entries: Sequence[AuditEntry], limit: int) -> AuditPage:
        more = len(entries) == limit
        return cls(entries=[AuditEntryModel.of(e) for e in entries], next_before=entries[-1].id if more else None)
