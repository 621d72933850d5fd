"""Demonstrations and their plans: draft, replace, freeze, amend, every version since, who takes part, and the
audit trail of every change.

Thin over ``DemonstrationRepository``: what it refuses comes back as problem
details (see ``api.problems``) with the status the refusal carries. Who may do
what is decided in ``api.security``: a demonstration the caller cannot see is
answered 404, as if it did not exist.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from adapters.sql import PlanVersion as StoredPlanVersion
from adapters.sql import StoredDemonstration
from api.access_models import AuditPage
from api.examples import AMENDMENT_EXAMPLES, PANGYO_AMENDMENT, PANGYO_PLAN, PLAN_EXAMPLES
from api.limits import JsonBodyRoute
from api.problems import AUTH_ERRORS, problem_responses
from api.security import Caller, require, visible
from api.state import ApiState, api_state
from pilot_core.access import Action, Role
from pilot_core.demonstration import STORED, DemonstrationPlan

router = APIRouter(prefix="/demonstrations", tags=["demonstrations"], route_class=JsonBodyRoute)
State = Annotated[ApiState, Depends(api_state)]
Ref = Annotated[
    str,
    Path(description="The demonstration's numeric id, or its slug", examples=["1", "pangyo-cobot-assembly-cell"]),
]
PlanBody = Annotated[DemonstrationPlan, Body(openapi_examples=PLAN_EXAMPLES)]

NOT_FOUND = {404: "No demonstration with this id or slug that this key can see"}
INVALID = {422: "The request is invalid: every refused value is listed in `errors`"}
FORBIDDEN = {403: "This key's role may not do this (to this demonstration)"}
OrganisationSlug = Annotated[str, Path(description="An organisation's slug", examples=["pangyo-robotics"])]
_HASH = "sha256:4b2f0c9d1e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c"  # an example, not this plan's


def within_limits(plan: DemonstrationPlan, state: ApiState, where: tuple[str, ...] = ("body",)) -> DemonstrationPlan:
    """Refuse (422) a plan whose windows cover more days than the ``max_window_days`` setting allows: evaluating a
    plan reads every hour of its windows, so this bounds what one request can cost."""
    limit = state.settings.max_window_days
    if plan.window_days > limit:
        message = (
            f"the windows cover {plan.window_days:g} days together; at most {limit:g} are allowed"
            " (the API's max_window_days setting)"
        )
        raise RequestValidationError([{"loc": (*where, "windows"), "msg": message, "type": "too_long"}])
    return plan


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
                    "organisation": "pangyo-robotics",
                    "participants": ["gyeonggi-evaluation", "sihwa-precision"],
                    "plan": PANGYO_PLAN,
                }
            ]
        }
    )

    id: int
    slug: str
    organisation: str | None = Field(description="The owner: the organisation (startup) that runs it")
    participants: list[str] = Field(description="Other organisations that see it: the host factory, the evaluator")
    version: int = Field(description="Number of the current plan version; 1 is the first")
    frozen: bool = Field(description="A draft (not frozen) may be replaced; a frozen plan only amended")
    plan_hash: str = Field(description="SHA-256 of the plan's canonical JSON: the name results cite")
    frozen_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    plan: DemonstrationPlan

    @classmethod
    def of(cls, stored: StoredDemonstration) -> Demonstration:
        return cls.model_validate(stored, from_attributes=True, context=STORED)


class DemonstrationSummary(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    "slug": "pangyo-cobot-assembly-cell",
                    "name": PANGYO_PLAN["name"],
                    "name_ko": PANGYO_PLAN["name_ko"],
                    "organisation": "pangyo-robotics",
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
    organisation: str | None
    version: int
    frozen: bool

    @classmethod
    def of(cls, stored: StoredDemonstration) -> DemonstrationSummary:
        return cls(
            id=stored.id,
            slug=stored.slug,
            name=stored.plan.name,
            name_ko=stored.plan.name_ko,
            organisation=stored.organisation,
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
        return cls.model_validate(stored, from_attributes=True, context=STORED)


class PlanVersion(PlanVersionSummary):
    """One version of a demonstration's plan, with the plan."""

    plan: DemonstrationPlan

    @classmethod
    def of(cls, stored: StoredPlanVersion) -> PlanVersion:
        return cls.model_validate(stored, from_attributes=True, context=STORED)


class Participants(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"organisation": "pangyo-robotics", "participants": ["gyeonggi-evaluation", "sihwa-precision"]}
            ]
        }
    )

    organisation: str | None = Field(description="The owner")
    participants: list[str]

    @classmethod
    def of(cls, stored: StoredDemonstration) -> Participants:
        return cls(organisation=stored.organisation, participants=list(stored.participants))


class Amendment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: DemonstrationPlan
    reason: str = Field(min_length=1, description="Why the frozen plan changes; kept with the new version")


@router.post(
    "",
    status_code=201,
    responses=problem_responses(
        AUTH_ERRORS
        | {403: "This key may not create demonstrations, or not for that organisation"}
        | {409: "The slug is taken", 422: "The plan, the slug or the organisation is invalid"}
    ),
)
def create_demonstration(
    plan: PlanBody,
    state: State,
    principal: Caller,
    request: Request,
    response: Response,
    slug: Annotated[
        str | None,
        Query(
            description="Lower-case words joined by hyphens, not only digits; made from the plan's name if not given",
            examples=["pangyo-cobot-cell-2026"],
        ),
    ] = None,
    organisation: Annotated[
        str | None,
        Query(description="Admins only: the owning organisation's slug (default: the caller's own)"),
    ] = None,
) -> Demonstration:
    """Store a plan as a new demonstration owned by the caller's organisation; its version 1 is a draft until frozen."""
    require(principal, Action.CREATE)
    if organisation is not None and organisation != principal.organisation and principal.role is not Role.ADMIN:
        raise HTTPException(403, "only an admin creates a demonstration for another organisation")
    owner = organisation or (None if principal.role is Role.ADMIN else principal.organisation)
    stored = state.demonstrations().create(within_limits(plan, state), slug, actor=principal.actor, owner=owner)
    response.headers["Location"] = str(request.url_for("get_demonstration", ref=str(stored.id)))
    return Demonstration.of(stored)


@router.get("", responses=problem_responses(AUTH_ERRORS))
def list_demonstrations(state: State, principal: Caller) -> list[DemonstrationSummary]:
    """Every demonstration this key can see, with its current version, oldest first."""
    return [
        DemonstrationSummary.of(stored) for stored in state.demonstrations().list() if principal.sees(stored.membership)
    ]


@router.get("/{ref}", responses=problem_responses(AUTH_ERRORS | NOT_FOUND | INVALID))
def get_demonstration(ref: Ref, state: State, principal: Caller) -> Demonstration:
    return Demonstration.of(visible(principal, state, ref))


@router.put(
    "/{ref}",
    responses=problem_responses(
        AUTH_ERRORS | FORBIDDEN | NOT_FOUND | {409: "The plan is frozen: amend it instead"} | INVALID
    ),
)
def replace_draft(ref: Ref, plan: PlanBody, state: State, principal: Caller) -> Demonstration:
    """Replace the draft plan in place; it keeps version 1 and gets a new hash."""
    stored = visible(principal, state, ref)
    require(principal, Action.REPLACE_DRAFT, stored)
    replaced = state.demonstrations().replace_draft(stored.id, within_limits(plan, state), actor=principal.actor)
    return Demonstration.of(replaced)


@router.post(
    "/{ref}/freeze",
    responses=problem_responses(
        AUTH_ERRORS
        | FORBIDDEN
        | NOT_FOUND
        | {409: "Someone else froze the plan first (two evaluators freezing at once): nothing was changed"}
        | INVALID
    ),
)
def freeze(ref: Ref, state: State, principal: Caller) -> Demonstration:
    """Freeze the draft, fixing its hash before the pilot runs. Freezing it again with the key that froze it
    changes nothing (a retry is safe); with any other key it is refused (409), naming who froze it and when."""
    stored = visible(principal, state, ref)
    require(principal, Action.FREEZE, stored)
    return Demonstration.of(state.demonstrations().freeze(stored.id, actor=principal.actor))


@router.post(
    "/{ref}/amendments",
    status_code=201,
    responses=problem_responses(
        AUTH_ERRORS
        | FORBIDDEN
        | NOT_FOUND
        | {409: "The plan is still a draft: replace it, or freeze it first"}
        | {422: "The plan is invalid, or the reason is missing or blank"}
    ),
)
def amend(
    ref: Ref,
    amendment: Annotated[Amendment, Body(openapi_examples=AMENDMENT_EXAMPLES)],
    state: State,
    principal: Caller,
    request: Request,
    response: Response,
) -> Demonstration:
    """Amend a frozen plan: a new version, frozen at once, with the reason; earlier versions stay as they were."""
    stored = visible(principal, state, ref)
    require(principal, Action.AMEND, stored)
    plan = within_limits(amendment.plan, state, ("body", "plan"))
    amended = state.demonstrations().amend(stored.id, plan, amendment.reason, actor=principal.actor)
    response.headers["Location"] = str(
        request.url_for("get_plan_version", ref=str(amended.id), number=str(amended.version))
    )
    return Demonstration.of(amended)


@router.get("/{ref}/versions", responses=problem_responses(AUTH_ERRORS | NOT_FOUND | INVALID))
def list_plan_versions(ref: Ref, state: State, principal: Caller) -> list[PlanVersionSummary]:
    """Every version of the plan, first to current."""
    stored = visible(principal, state, ref)
    return [PlanVersionSummary.of(version) for version in state.demonstrations().versions(stored.id)]


@router.get(
    "/{ref}/versions/{number}",
    responses=problem_responses(
        AUTH_ERRORS | {404: "No demonstration with this id or slug that this key can see, or no such version"} | INVALID
    ),
)
def get_plan_version(
    ref: Ref, number: Annotated[int, Path(ge=1, description="Plan version, from 1")], state: State, principal: Caller
) -> PlanVersion:
    stored = visible(principal, state, ref)
    return PlanVersion.of(state.demonstrations().version(stored.id, number))


@router.get("/{ref}/participants", responses=problem_responses(AUTH_ERRORS | NOT_FOUND | INVALID))
def list_participants(ref: Ref, state: State, principal: Caller) -> Participants:
    """The owning organisation and the others that take part."""
    return Participants.of(visible(principal, state, ref))


@router.put(
    "/{ref}/participants/{organisation}",
    responses=problem_responses(
        AUTH_ERRORS
        | FORBIDDEN
        | NOT_FOUND
        | {409: "The organisation owns the demonstration", 422: "No such organisation"}
    ),
)
def add_participant(ref: Ref, organisation: OrganisationSlug, state: State, principal: Caller) -> Participants:
    """Let an organisation (the host factory, the evaluator) see the demonstration. Adding it again changes nothing."""
    stored = visible(principal, state, ref)
    require(principal, Action.MANAGE_PARTICIPANTS, stored)
    return Participants.of(state.demonstrations().add_participant(stored.id, organisation, actor=principal.actor))


@router.delete(
    "/{ref}/participants/{organisation}",
    responses=problem_responses(
        AUTH_ERRORS | FORBIDDEN | {404: "No such demonstration, or the organisation does not take part"} | INVALID
    ),
)
def remove_participant(ref: Ref, organisation: OrganisationSlug, state: State, principal: Caller) -> Participants:
    stored = visible(principal, state, ref)
    require(principal, Action.MANAGE_PARTICIPANTS, stored)
    return Participants.of(state.demonstrations().remove_participant(stored.id, organisation, actor=principal.actor))


@router.get("/{ref}/audit", responses=problem_responses(AUTH_ERRORS | NOT_FOUND | INVALID))
def demonstration_audit(
    ref: Ref,
    state: State,
    principal: Caller,
    limit: Annotated[int, Query(ge=1, le=1000, description="Entries per page")] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**62, description="Only entries older than this id")] = None,
) -> AuditPage:
    """Every change to the demonstration: who, when, what changed and why, newest first."""
    stored = visible(principal, state, ref)
    entries = state.audit().entries(stored.id, limit=limit, before_id=before)
    return AuditPage.of(entries, limit)
