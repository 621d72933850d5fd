"""Authentication by API key, and the checks every router makes before it reads or changes anything.

A key comes as ``Authorization: Bearer pt_…`` or as ``X-API-Key: pt_…``; a request that reads (GET, HEAD)
may instead carry the session cookie of a console signed in with a key, which is how the console's download
links are authorised (a cookie never authorises a change: those come through the console's forms, with CSRF
tokens, or with a key). What
a caller cannot see is answered 404, exactly as if it did not exist; what it can
see but its role does not allow is answered 403.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from adapters.sql import NotFound, StoredDemonstration
from api.console.sessions import Session
from api.state import ApiState, api_state
from pilot_core.access import Action, Principal, Role
from pilot_core.registry import DeviceKey

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="api_key",
    description="An API key made with `pilot keys create` or `POST /v1/api-keys`: `Authorization: Bearer pt_…`",
)
_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="api_key_header", description="The same key, as X-API-Key"
)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
SESSION_COOKIE = "pilot_session"
_READING = frozenset({"GET", "HEAD"})


def console_session(request: Request, state: ApiState) -> Session | None:
    """The console session the request's cookie names, its principal as its key now stands; None if there is none,
    it expired, or its key was revoked since."""
    return state.sessions.get(request.cookies.get(SESSION_COOKIE))


def caller(
    request: Request,
    state: Annotated[ApiState, Depends(api_state)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
) -> Principal:
    if bearer and header and bearer.credentials != header:
        raise HTTPException(
            401, "two different API keys were sent (Authorization and X-API-Key); send one", headers=_CHALLENGE
        )
    token = bearer.credentials if bearer else header
    if not token and request.method in _READING:
        session = console_session(request, state)
        if session is not None:
            request.state.principal = session.principal
            return session.principal
    if not token:
        raise HTTPException(
            401,
            "this endpoint needs an API key: send `Authorization: Bearer pt_…` (an admin makes keys with"
            " `pilot keys create`)",
            headers=_CHALLENGE,
        )
    principal = state.access().authenticate(token)
    if principal is None:
        raise HTTPException(401, "the API key is not valid: unknown, revoked or mistyped", headers=_CHALLENGE)
    request.state.principal = principal
    return principal


Caller = Annotated[Principal, Depends(caller)]


def require(principal: Principal, action: Action, demonstration: StoredDemonstration | None = None) -> None:
    """403 unless ``principal`` may do ``action`` (on ``demonstration``, which it must be able to see)."""
    if not principal.may(action, demonstration.membership if demonstration else None):
        raise HTTPException(403, _refusal(principal, action, demonstration))


def _refusal(principal: Principal, action: Action, demonstration: StoredDemonstration | None) -> str:
    doing = action.value.replace("_", " ")
    if demonstration is not None and principal.may(action):
        return f"a {principal.role.value} key may {doing} only the demonstrations its organisation owns"
    if principal.demonstration_id is not None and principal.may(action):
        return "this key is limited to one demonstration"
    return f"a key with the role {principal.role.value} may not {doing}"


def visible(principal: Principal, state: ApiState, ref: str) -> StoredDemonstration:
    """The demonstration ``ref`` names, if ``principal`` can see it; 404 otherwise, as for one that does not exist."""
    stored = state.demonstrations().get(ref)
    if not principal.sees(stored.membership):
        raise NotFound(f"no demonstration {ref!r}")
    return stored


def visible_devices(principal: Principal, state: ApiState) -> set[DeviceKey] | None:
    """The devices ``principal`` may see (None: all of them, for an admin).

    Its organisation's own devices, as the registry says, and every device in scope of a demonstration it sees.
    """
    if principal.role is Role.ADMIN and principal.demonstration_id is None:
        return None
    seen = set()
    if principal.demonstration_id is None and state.registry is not None:
        seen = {d.entry.key for d in state.registry if d.entry.organisation == principal.organisation}
    for stored in state.demonstrations().list():
        if principal.sees(stored.membership):
            seen.update(DeviceKey(stored.plan.site, stored.plan.line, device) for device in stored.plan.devices)
    return seen
