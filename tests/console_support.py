"""Signing in to the web console from tests: through its form as a browser does, or straight to a session."""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.security import SESSION_COOKIE
from api.state import ApiState

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a console page."""
    match = _CSRF.search(html)
    assert match, "the page has no form with a CSRF token"
    return match[1]


def sign_in(client: TestClient, token: str) -> None:
    """Sign ``client`` in through the sign-in form with the API key ``token``."""
    form = client.get("/sign-in")
    response = client.post(
        "/sign-in",
        data={"csrf": csrf_of(form.text), "api_key": token, "next": "/demonstrations"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert SESSION_COOKIE in client.cookies


def session_cookie(app: FastAPI, token: str) -> dict[str, str]:
    """A session for the key ``token``, opened directly (no sign-in attempt spent), as a cookie to send."""
    state: ApiState = app.state.pilot
    principal = state.access().authenticate(token)
    assert principal is not None
    return {SESSION_COOKIE: state.sessions.open(principal).token}
