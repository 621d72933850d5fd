"""Demonstrations and their plans: draft, replace, freeze, amend, and every version since.

Thin over ``DemonstrationRepository``: what it refuses comes back as problem
details (see ``api.problems``) with the status the refusal carries.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from adapters.sql import PlanVersion as StoredPlanVersion
from adapters.sql import StoredDemonstration
from api.examples import AMENDMENT_EXAMPLES, PANGYO_AMENDMENT, PANGYO_PLAN, PLAN_EXAMPLES
from api.problems import problem_responses
from api.state import ApiState, api_state
from pilot_core.demonstration import DemonstrationPlan

router = APIRouter(prefix="/demonstrations", tags=["demonstrations"])
State = Annotated[ApiState, Depends(api_state)]
Ref = Annotated[
    str,
    Path(description="The demonstration's numeric id, or its slug", examples=["1", "pangyo-cobot-assembly-cell"]),
]
PlanBody = Annotated[DemonstrationPlan, Body(openapi_examples=PLAN_EXAMPLES)]

NOT_FOUND = {404: "No demonstration with this id or slug"}
INVALID = {422: "The request is invalid: every refused value is listed in `errors`"}
_HASH = "sha256:4b2f0c9d1e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c"  # an example, not this plan's


class Demonstration(BaseModel):
    """A demonstration with its current (latest) plan version."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    "slug": "pangyo-cobot-assembly-cell",
                    "version": 1,
                    "frozen": True,
                    "plan_hash": _HASH,
                    "frozen_at": "2026-09-30T06:12:44.183Z",
                    "created_at": "2026-09-28T01:03:10.552Z",
                    "updated_at": "2026-09-30T06:12:44.183Z",
                    "plan": PANGYO_PLAN,
                }
            ]
        }
    )

    id: int
    slug: str
    version: int = Field(description="Number of the current plan version; 1 is the first")
    frozen: bool = Field(description="A draft (not frozen) may be replaced; a frozen plan only amended")
    plan_hash: str = Field(description="SHA-256 of the plan's canonical JSON: the name results cite")
    frozen_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    plan: DemonstrationPlan

    @classmethod
    def of(cls, stored: StoredDemonstration) -> Demonstration:
        return cls.model_validate(stored, from_attributes=True)


class DemonstrationSummary(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    "slug": "pangyo-cobot-assembly-cell",
                    "name": PANGYO_PLAN["name"],
                    "name_ko": PANGYO_PLAN["name_ko"],
                    "version": 2,
                    "frozen": True,
                }
            ]
        }
    )

    id: int
    slug: str
    name: str
    name_ko: str
    version: int
    frozen: bool

    @classmethod
    def of(cls, stored: StoredDemonstration) -> DemonstrationSummary:
        return cls(
            id=stored.id,
            slug=stored.slug,
            name=stored.plan.name,
            name_ko=stored.plan.name_ko,
            version=stored.version,
            frozen=stored.frozen,
        )


class PlanVersionSummary(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "version": 2,
                    "plan_hash": _HASH,
                    "frozen": True,
                    "frozen_at": "2026-10-30T02:40:05.917Z",
                    "reason": PANGYO_AMENDMENT["reason"],
                    "created_at": "2026-10-30T02:40:05.917Z",
                }
            ]
        }
    )

    version: int
    plan_hash: str
    frozen: bool
    frozen_at: dt.datetime | None
    reason: str | None = Field(description="Why an amendment was made; none for version 1")
    created_at: dt.datetime

    @classmethod
    def of(cls, stored: StoredPlanVersion) -> PlanVersionSummary:
        return cls.model_validate(stored, from_attributes=True)


class PlanVersion(PlanVersionSummary):
    """One version of a demonstration's plan, with the plan."""

    plan: DemonstrationPlan

    @classmethod
    def of(cls, stored: StoredPlanVersion) -> PlanVersion:
        return cls.model_validate(stored, from_attributes=True)


class Amendment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: DemonstrationPlan
    reason: str = Field(min_length=1, description="Why the frozen plan changes; kept with the new version")


@router.post(
    "",
    status_code=201,
    responses=problem_responses({409: "The slug is taken", 422: "The plan or the slug is invalid"}),
)
def create_demonstration(
    plan: PlanBody,
    state: State,
    request: Request,
    response: Response,
    slug: Annotated[
        str | None,
        Query(
            description="Lower-case words joined by hyphens, not only digits; made from the plan's name if not given",
            examples=["pangyo-cobot-cell-2026"],
        ),
    ] = None,
) -> Demonstration:
    """Store a plan as a new demonstration; its version 1 is a draft until frozen."""
    stored = state.demonstrations().create(plan, slug)
    response.headers["Location"] = str(request.url_for("get_demonstration", ref=str(stored.id)))
    return Demonstration.of(stored)


@router.get("")
def list_demonstrations(state: State) -> list[DemonstrationSummary]:
    """Every demonstration with its current version, oldest first."""
    return [DemonstrationSummary.of(stored) for stored in state.demonstrations().list()]


@router.get("/{ref}", responses=problem_responses(NOT_FOUND | INVALID))
def get_demonstration(ref: Ref, state: State) -> Demonstration:
    return Demonstration.of(state.demonstrations().get(ref))


@router.put(
    "/{ref}",
    responses=problem_responses(NOT_FOUND | {409: "The plan is frozen: amend it instead"} | INVALID),
)
def replace_draft(ref: Ref, plan: PlanBody, state: State) -> Demonstration:
    """Replace the draft plan in place; it keeps version 1 and gets a new hash."""
    return Demonstration.of(state.demonstrations().replace_draft(ref, plan))


@router.post("/{ref}/freeze", responses=problem_responses(NOT_FOUND | INVALID))
def freeze(ref: Ref, state: State) -> Demonstration:
    """Freeze the draft, fixing its hash before the pilot runs. Freezing a frozen plan changes nothing."""
    return Demonstration.of(state.demonstrations().freeze(ref))


@router.post(
    "/{ref}/amendments",
    status_code=201,
    responses=problem_responses(
        NOT_FOUND
        | {409: "The plan is still a draft: replace it, or freeze it first"}
        | {422: "The plan is invalid, or the reason is missing or blank"}
    ),
)
def amend(
    ref: Ref,
    amendment: Annotated[Amendment, Body(openapi_examples=AMENDMENT_EXAMPLES)],
    state: State,
    request: Request,
    response: Response,
) -> Demonstration:
    """Amend a frozen plan: a new version, frozen at once, with the reason; earlier versions stay as they were."""
    stored = state.demonstrations().amend(ref, amendment.plan, amendment.reason)
    response.headers["Location"] = str(
        request.url_for("get_plan_version", ref=str(stored.id), number=str(stored.version))
    )
    return Demonstration.of(stored)


@router.get("/{ref}/versions", responses=problem_responses(NOT_FOUND | INVALID))
def list_plan_versions(ref: Ref, state: State) -> list[PlanVersionSummary]:
    """Every version of the plan, first to current."""
    return [PlanVersionSummary.of(version) for version in state.demonstrations().versions(ref)]


@router.get(
    "/{ref}/versions/{number}",
    responses=problem_responses({404: "No demonstration with this id or slug, or no such version"} | INVALID),
)
def get_plan_version(
    ref: Ref, number: Annotated[int, Path(ge=1, description="Plan version, from 1")], state: State
) -> PlanVersion:
    return PlanVersion.of(state.demonstrations().version(ref, number))
