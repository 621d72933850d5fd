"""The caller, organisations, API keys and the deployment's audit log. All but ``/me`` are for admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from api.access_models import (
    ApiKeyModel,
    AuditPage,
    CreatedApiKey,
    Me,
    NewApiKey,
    NewOrganisation,
    OrganisationModel,
)
from api.limits import JsonBodyRoute
from api.problems import AUTH_ERRORS, problem_responses
from api.security import Caller, require
from api.state import ApiState, api_state
from pilot_core.access import Action

router = APIRouter(tags=["access"], route_class=JsonBodyRoute)
State = Annotated[ApiState, Depends(api_state)]
ADMINS_ONLY = AUTH_ERRORS | {403: "Only an admin key may do this"}


@router.get("/me", responses=problem_responses(AUTH_ERRORS))
def me(principal: Caller) -> Me:
    """Who this key says the caller is."""
    return Me.of(principal)


@router.get("/organisations", responses=problem_responses(ADMINS_ONLY))
def list_organisations(state: State, principal: Caller) -> list[OrganisationModel]:
    require(principal, Action.ADMINISTER)
    return [OrganisationModel.of(o) for o in state.access().organisations()]


@router.post(
    "/organisations",
    status_code=201,
    responses=problem_responses(ADMINS_ONLY | {409: "The slug is taken", 422: "The slug is invalid"}),
)
def create_organisation(new: NewOrganisation, state: State, principal: Caller) -> OrganisationModel:
    require(principal, Action.ADMINISTER)
    return OrganisationModel.of(state.access().create_organisation(new.slug, new.name, actor=principal.actor))


@router.get("/api-keys", responses=problem_responses(ADMINS_ONLY | {422: "Invalid organisation filter"}))
def list_api_keys(
    state: State,
    principal: Caller,
    organisation: Annotated[str | None, Query(max_length=100, description="Only this organisation's keys")] = None,
) -> list[ApiKeyModel]:
    """Every key, revoked ones included; never their secrets."""
    require(principal, Action.ADMINISTER)
    return [ApiKeyModel.of(k) for k in state.access().keys(organisation)]


@router.post(
    "/api-keys",
    status_code=201,
    responses=problem_responses(
        ADMINS_ONLY
        | {404: "No such demonstration", 422: "No such organisation, an invalid role, or an admin key limited"}
    ),
)
def create_api_key(new: NewApiKey, state: State, principal: Caller) -> CreatedApiKey:
    """Make a key. Its token is in this answer only: it is never stored, so it cannot be shown again."""
    require(principal, Action.ADMINISTER)
    key, token = state.access().create_key(
        new.name, new.role, new.organisation, actor=principal.actor, demonstration=new.demonstration
    )
    return CreatedApiKey(**ApiKeyModel.of(key).model_dump(), token=token)


@router.delete(
    "/api-keys/{key_id}",
    status_code=204,
    responses=problem_responses(ADMINS_ONLY | {404: "No such key"}),
)
def revoke_api_key(
    key_id: Annotated[str, Path(max_length=32, description="The key's id, as listed")], state: State, principal: Caller
) -> Response:
    """Revoke a key for good: it is refused from now on, and stays listed with when it was revoked."""
    require(principal, Action.ADMINISTER)
    state.access().revoke_key(key_id, actor=principal.actor)
    return Response(status_code=204)


@router.get("/audit", responses=problem_responses(ADMINS_ONLY | {422: "Invalid paging"}))
def audit_log(
    state: State,
    principal: Caller,
    limit: Annotated[int, Query(ge=1, le=1000, description="Entries per page")] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**62, description="Only entries older than this id")] = None,
) -> AuditPage:
    """Every change made through the API or on the server, newest first."""
    require(principal, Action.ADMINISTER)
    return AuditPage.of(state.audit().entries(limit=limit, before_id=before), limit)
