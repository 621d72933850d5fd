"""A demonstration's signed evidence bundle, for evaluators to take away and verify offline (`pilot verify`)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response

from adapters import bundle_archive
from adapters.signing import SigningKey, SigningKeyError
from api.problems import AUTH_ERRORS, problem_responses
from api.routers.demonstrations import INVALID, NOT_FOUND, Ref
from api.routers.kpis import Service, Version, engine_errors
from api.security import Caller
from api.state import ApiState, api_state
from evidence.export import ExportError, export

router = APIRouter(prefix="/demonstrations", tags=["evidence"])
State = Annotated[ApiState, Depends(api_state)]

_BUNDLE = {
    "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
    "description": "The bundle: plan versions, audit trail, the rows of every window (CSV), results, and a manifest"
    " of SHA-256 hashes signed with the deployment's Ed25519 key",
}
_ERRORS = problem_responses(
    AUTH_ERRORS
    | NOT_FOUND
    | INVALID
    | {
        409: "The plan names a device that is not in the device registry, or the data kept changing while exported",
        503: "InfluxDB could not be read, or the signing key cannot be read",
    }
)


@router.get("/{ref}/evidence", response_class=Response, responses={200: _BUNDLE, **_ERRORS})
def evidence_bundle(ref: Ref, service: Service, state: State, principal: Caller, version: Version = None) -> Response:
    """Export the demonstration's evidence: every hour is read again from InfluxDB, so this takes a while."""
    try:
        key = SigningKey.load_or_create(state.settings.signing_key_file)
        with engine_errors():
            bundle = export(
                service,
                state.audit(),
                key,
                ref,
                version,
                created_by=f"{principal.name} ({principal.role.value}, {principal.organisation})",
            )
    except SigningKeyError as exc:
        raise HTTPException(503, str(exc)) from None
    except ExportError as exc:
        raise HTTPException(409, str(exc)) from None
    disposition = (
        f'attachment; filename="demonstration-{bundle.manifest.demonstration_id}-evidence.zip";'
        f" filename*=UTF-8''{quote(bundle.name)}"
    )
    return Response(
        bundle_archive.archive(bundle.files),
        media_type="application/zip",
        headers={"Content-Disposition": disposition, "X-Pilot-Signing-Key": bundle.manifest.signing_key},
    )
