"""What every console response shares: its security headers, the cookies it sets, CSRF checks and sign-in throttling.

Forms are checked against a CSRF token: the session's own once signed in, before that (the sign-in form) a random
value kept in an HttpOnly cookie and repeated in the form. Cookies are HttpOnly and SameSite=Lax, and Secure when
the request came over TLS (directly, or through a proxy uvicorn trusts).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import Depends, HTTPException, Request
from starlette.responses import Response

from api.console.sessions import LIFETIME_S, Session
from api.security import SESSION_COOKIE, console_session
from api.state import ApiState, api_state
from pilot_core.rate_limit import RateLimit, TokenBuckets

CSRF_COOKIE = "pilot_csrf"
LANGUAGE_COOKIE = "pilot_lang"
CSRF_FIELD = "csrf"
# No inline script, nothing from elsewhere. Inline styles stay allowed: the charts are matplotlib's SVG, styled by
# attributes; a style cannot run code.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
    " font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self';"
    " frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages hold a tenant's numbers: not kept by the browser or a proxy
}
MAX_FORM_BYTES = 16_384
MAX_FORM_FIELDS = 20
# Sign-in attempts per client address: 10 at once, then one every 6 s.
SIGN_IN_LIMIT = RateLimit(records_per_s=1 / 6, burst=10)
_MAX_CLIENTS = 10_000  # addresses remembered before the buckets start afresh: memory stays bounded


def secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="lax", secure=secure(request))


def start_session(request: Request, response: Response, session: Session) -> None:
    """Hand the browser its session cookie (the one-time sign-in link uses this too)."""
    set_cookie(request, response, SESSION_COOKIE, session.token, max_age=LIFETIME_S)
    response.delete_cookie(CSRF_COOKIE, path="/")


def csrf_token(request: Request, session: Session | None) -> str:
    """The token this page's forms carry; a new pre-session one is set as a cookie by ``finish``."""
    if session is not None:
        return session.csrf
    existing = request.cookies.get(CSRF_COOKIE, "")
    if len(existing) >= 32:
        return existing
    token: str = getattr(request.state, "new_csrf", "") or secrets.token_urlsafe(32)
    request.state.new_csrf = token
    return token


def finish(request: Request, response: Response) -> Response:
    """Add the security headers, and the pre-session CSRF cookie if this page made one."""
    response.headers.update(SECURITY_HEADERS)
    new_csrf = getattr(request.state, "new_csrf", None)
    if new_csrf:
        set_cookie(request, response, CSRF_COOKIE, new_csrf, max_age=None)
    return response


async def form_fields(request: Request) -> dict[str, str]:
    """An url-encoded form's fields (the console's forms have no files); 400 for anything else."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, f"a console form is at most {MAX_FORM_BYTES} bytes")
    if not body:
        return {}
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise HTTPException(415, "a console form is sent as application/x-www-form-urlencoded")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "the form could not be read") from None
    return dict(pairs)


Form = Annotated[dict[str, str], Depends(form_fields)]


class CsrfRefused(Exception):
    """A form came without this browser's CSRF token: answered 403 with the page that says so."""


def check_csrf(request: Request, form: dict[str, str], session: Session | None) -> None:
    expected = session.csrf if session is not None else request.cookies.get(CSRF_COOKIE, "")
    sent = form.get(CSRF_FIELD, "")
    if not expected or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise CsrfRefused


def current_session(request: Request, state: Annotated[ApiState, Depends(api_state)]) -> Session | None:
    return console_session(request, state)


CurrentSession = Annotated[Session | None, Depends(current_session)]


class SignInThrottle:
    """Token buckets of sign-in attempts per client address."""

    def __init__(self, limit: RateLimit = SIGN_IN_LIMIT) -> None:
        self._buckets: TokenBuckets[str] = TokenBuckets(limit)
        self._clients: set[str] = set()
        self._lock = threading.Lock()

    def wait_s(self, client: str) -> float | None:
        """None if ``client`` may try now; otherwise how long until it may."""
        with self._lock:
            self._clients.add(client)
            if len(self._clients) > _MAX_CLIENTS:
                self._clients = {client}
                self._buckets.reset()
            throttled = self._buckets.take(client, 1, time.monotonic())
        return None if throttled is None else throttled.wait_s
