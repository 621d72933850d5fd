"""API keys for tests that call the API: every /v1 endpoint needs one."""

from __future__ import annotations

import contextlib

from fastapi import FastAPI
from fastapi.testclient import TestClient

from adapters.sql import AccessRepository, DuplicateOrganisation
from pilot_core.access import Actor, Role

TESTS = Actor.system("tests")
OPERATOR = "operator"


def key_headers(
    app: FastAPI, role: Role = Role.ADMIN, organisation: str = OPERATOR, demonstration: str | int | None = None
) -> dict[str, str]:
    """An ``Authorization`` header with a new key of ``role`` in ``organisation`` (made if missing)."""
    access = AccessRepository(app.state.pilot.database)
    with contextlib.suppress(DuplicateOrganisation):
        access.create_organisation(organisation, organisation, actor=TESTS)
    name = f"{role.value} of {organisation}"
    _, token = access.create_key(name, role, organisation, actor=TESTS, demonstration=demonstration)
    return {"Authorization": f"Bearer {token}"}


def admin_client(app: FastAPI, *, raise_server_exceptions: bool = True) -> TestClient:
    """A client of ``app`` that sends an admin key with every request."""
    return TestClient(app, headers=key_headers(app), raise_server_exceptions=raise_server_exceptions)
