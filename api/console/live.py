"""The console's live line of a demonstration, and the one-time sign-in link `pilot demo` prints.

The live page shows what ``GET /v1/demonstrations/{ref}/live`` answers, computed by the same function, and
refreshes itself with ``/static/live.js`` (the CSP allows no inline script; a meta refresh would fail the
accessibility check). The sign-in link's token is spent by its first use, whatever follows; it is answered with
the session cookie a sign-in with the key would give, and never names the key itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from api.console.i18n import ConsoleWords
from api.console.pages import Seen, SignedIn, State, language, local_path, page, redirect
from api.console.web import CurrentSession, SignInThrottle, start_session
from api.routers.live import live_line
from kpi_engine.live import LiveLine

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)
REFRESH_S = 10


@dataclass(frozen=True, slots=True)
class LiveView:
    line: LiveLine | None
    error: str | None  # why there is no live line: InfluxDB down, no registry


@router.get("/demonstrations/{ref}/live")
def live_page(request: Request, state: State, session: SignedIn, stored: Seen) -> Response:
    try:
        view = LiveView(live_line(state, stored), None)
    except HTTPException as exc:
        view = LiveView(None, str(exc.detail))
    words = ConsoleWords(language(request))
    return page(
        request,
        "live.html",
        session,
        d=stored,
        plan=stored.plan,
        view=view,
        zone=stored.plan.calendar.zone,
        refresh_s=REFRESH_S,
        duration=lambda seconds: duration(words, seconds),
        size=size,
    )


def duration(words: ConsoleWords, seconds: float) -> str:
    """How long a state has held: 2 h 05 min, 12 min, 40 s."""
    whole = int(seconds)
    if whole >= 3600:
        return words.format("live_hours_minutes", hours=f"{whole // 3600:,}", minutes=f"{whole % 3600 // 60:02d}")
    if whole >= 60:
        return words.format("live_minutes", minutes=whole // 60)
    return words.format("live_seconds", seconds=whole)


def size(octets: int) -> str:
    """Bytes as a person reads them: 0 B, 512 kB, 1.5 MB."""
    value = float(octets)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" or value >= 100 else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


@router.get("/sign-in/link")
def sign_in_link(
    request: Request,
    state: State,
    session: CurrentSession,
    token: str = "",  # any other text than a link token is an unknown link: the same page, not a 422
    next: str | None = None,
) -> Response:
    """Sign in with a one-time link's token, which is spent by this request; then go to ``next`` on this server."""
    throttle: SignInThrottle = request.app.state.console_sign_in
    client = request.client.host if request.client else "unknown"
    wait_s = throttle.wait_s(client)  # a guessed token is a sign-in attempt, as a guessed key is
    words = ConsoleWords(language(request))
    if wait_s is not None:
        message = words.format("sign_in_throttled", seconds=max(1, round(wait_s)))
        response = page(request, "sign_in.html", None, status=429, back_to=local_path(next), message=message)
        response.headers["Retry-After"] = str(max(1, round(wait_s)))
        return response
    principal = state.access().redeem_sign_in_link(token)
    if principal is None:
        if session is not None:  # a link opened again in a browser it already signed in
            return redirect(request, local_path(next))
        return page(
            request, "sign_in.html", None, status=401, back_to=local_path(next), message=words["sign_in_link_spent"]
        )
    if session is not None:
        state.sessions.close(session.token)
    signed = redirect(request, local_path(next))
    start_session(request, signed, state.sessions.open(principal))
    return signed
