"""The console's pages: sign-in and sign-out, the language switch, the demonstrations, one demonstration, its
freeze and its amendments.

Every page needs a session except sign-in; one without is sent to sign in and back. A demonstration the caller
cannot see gets exactly the 404 page a missing one gets. Changes go through the API's own router functions, so the
console may do nothing the caller's key could not do through the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any
from urllib.parse import quote

import jinja2
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Match

from adapters.sql import FrozenByAnother, NotFound, StoredDemonstration
from api.console import views
from api.console.i18n import ConsoleWords
from api.console.sessions import Session
from api.console.web import (
    CSRF_FIELD,
    LANGUAGE_COOKIE,
    CurrentSession,
    Form,
    SignInThrottle,
    check_csrf,
    csrf_token,
    finish,
    set_cookie,
    start_session,
)
from api.routers.demonstrations import freeze as freeze_through_api
from api.routers.reports import preferred_language
from api.security import SESSION_COOKIE, console_session, require, visible
from api.state import ApiState, api_state
from pilot_core.access import Action
from pilot_core.comparison import Verdict
from pilot_core.demonstration import Phase
from reports.charts import FontMissing, korean_font_files
from reports.i18n import Language

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)
State = Annotated[ApiState, Depends(api_state)]
TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("api.console", "templates"),
    autoescape=True,  # plan names, reasons and audit entries are whatever their authors typed
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
LANGUAGE_COOKIE_S = 365 * 86_400


@dataclass(frozen=True, slots=True)
class NavLink:
    path: str
    word: str  # a key of ConsoleWords


# The pages every signed-in page links to; other pages (the live line) add theirs here.
NAV: list[NavLink] = [NavLink("/demonstrations", "nav_demonstrations")]


class SignInNeeded(Exception):
    """A page asked for without a live session: the browser is sent to sign in, and back."""

    def __init__(self, back_to: str) -> None:
        self.back_to = back_to


def local_path(path: str | None, default: str = "/demonstrations") -> str:
    """``path`` if it is a path on this server (never another site: ``//host`` or ``/\\host`` are not)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path or any(ord(c) < 32 for c in path):
        return default
    return path


def language(request: Request) -> Language:
    """The language chosen with the switch (remembered in a cookie), else the browser's, else English."""
    chosen = request.cookies.get(LANGUAGE_COOKIE)
    return Language(chosen) if chosen in {lang.value for lang in Language} else preferred_language(request)


def signed_in(request: Request, session: CurrentSession) -> Session:
    if session is None:
        back_to = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInNeeded(back_to)
    return session


SignedIn = Annotated[Session, Depends(signed_in)]


class PageNotFound(Exception):
    """A console page for something missing, or that the caller may not see: both get the same 404 page."""


def seen(ref: str, state: State, session: SignedIn) -> StoredDemonstration:
    try:
        return visible(session.principal, state, ref)
    except NotFound:
        raise PageNotFound from None


Seen = Annotated[StoredDemonstration, Depends(seen)]


def page(request: Request, template: str, session: Session | None, *, status: int = 200, **values: Any) -> HTMLResponse:
    words = ConsoleWords(language(request))
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    body = TEMPLATES.get_template(template).render(
        w=words,
        lang=words.language.value,
        other_lang=(Language.EN if words.language is Language.KO else Language.KO).value,
        session=session,
        principal=session.principal if session else None,
        csrf=csrf_token(request, session),
        csrf_field=CSRF_FIELD,
        here=local_path(here if _reopenable(request) else None),
        nav=NAV,
        path=request.url.path,
        Phase=Phase,
        Verdict=Verdict,
        **values,
    )
    response = HTMLResponse(body, status_code=status)
    finish(request, response)
    return response


def _reopenable(request: Request) -> bool:
    """Whether this page's address opens it again (a GET), so the language switch may come back to it: a page
    answering a form posted to ``/language`` or ``/sign-out`` (a refusal) is not."""
    if request.method in ("GET", "HEAD"):
        return True
    scope = {"type": "http", "path": request.url.path, "method": "GET"}
    return any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes)


def redirect(request: Request, to: str) -> Response:
    return finish(request, RedirectResponse(to, status_code=303))


@router.get("/")
def home(request: Request, session: CurrentSession) -> Response:
    return redirect(request, "/demonstrations" if session else "/sign-in")


@router.get("/sign-in")
def sign_in_page(request: Request, session: CurrentSession, next: str | None = None) -> Response:
    if session is not None:
        return redirect(request, local_path(next))
    return page(request, "sign_in.html", None, back_to=local_path(next), message=None)


@router.post("/sign-in")
def sign_in(request: Request, state: State, form: Form) -> Response:
    check_csrf(request, form, None)
    back_to = local_path(form.get("next"))
    client = request.client.host if request.client else "unknown"
    wait_s = _throttle(request).wait_s(client)
    if wait_s is not None:
        words = ConsoleWords(language(request))
        message = words.format("sign_in_throttled", seconds=max(1, round(wait_s)))
        response = page(request, "sign_in.html", None, status=429, back_to=back_to, message=message)
        response.headers["Retry-After"] = str(max(1, round(wait_s)))
        return response
    principal = state.access().authenticate(form.get("api_key", "").strip())
    if principal is None:
        message = ConsoleWords(language(request))["sign_in_refused"]
        return page(request, "sign_in.html", None, status=401, back_to=back_to, message=message)
    signed = redirect(request, back_to)
    start_session(request, signed, state.sessions.open(principal))
    return signed


@router.post("/sign-out")
def sign_out(request: Request, state: State, session: CurrentSession, form: Form) -> Response:
    if session is not None:
        check_csrf(request, form, session)
        state.sessions.close(session.token)
    response = redirect(request, "/sign-in")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/language")
def switch_language(request: Request, session: CurrentSession, form: Form) -> Response:
    check_csrf(request, form, session)
    response = redirect(request, local_path(form.get("next")))
    chosen = form.get("lang")
    if chosen in {lang.value for lang in Language}:
        set_cookie(request, response, LANGUAGE_COOKIE, chosen, max_age=LANGUAGE_COOKIE_S)
    return response


@router.get("/demonstrations")
def demonstration_list(request: Request, state: State, session: SignedIn) -> Response:
    rows = views.demonstrations(state, _drawn_pages(request), session.principal)
    return page(request, "demonstrations.html", session, rows=rows)


@router.get("/demonstrations/{ref}")
def demonstration_page(request: Request, state: State, session: SignedIn, stored: Seen) -> Response:
    view = views.demonstration(state, _drawn_pages(request), session.principal, stored, language(request))
    just_frozen = request.query_params.get("frozen") == "1" and view.stored.frozen
    return page(
        request, "demonstration.html", session, view=view, d=view.stored, plan=view.stored.plan, just_frozen=just_frozen
    )


@router.get("/demonstrations/{ref}/freeze")
def freeze_page(request: Request, session: SignedIn, stored: Seen) -> Response:
    if not session.principal.may(Action.FREEZE, stored.membership):
        message = ConsoleWords(language(request))["freeze_not_allowed"]
        return page(request, "freeze.html", session, status=403, d=stored, plan=stored.plan, message=message)
    return page(request, "freeze.html", session, d=stored, plan=stored.plan, message=None)


@router.post("/demonstrations/{ref}/freeze")
def freeze(request: Request, state: State, session: SignedIn, stored: Seen, form: Form) -> Response:
    """Freeze through the API's own handler, once the caller confirmed the hash it was shown."""
    check_csrf(request, form, session)
    words = ConsoleWords(language(request))

    def again(status: int, message: str) -> Response:
        return page(request, "freeze.html", session, status=status, d=stored, plan=stored.plan, message=words[message])

    try:
        require(session.principal, Action.FREEZE, stored)
    except HTTPException:
        return again(403, "freeze_not_allowed")
    if stored.frozen:
        return again(200, "already_frozen")
    if form.get("plan_hash") != stored.plan_hash:  # the draft was replaced after the confirmation was shown
        return again(409, "freeze_changed")
    try:
        freeze_through_api(str(stored.id), state, session.principal)
    except FrozenByAnother:  # another evaluator froze it since this page read it
        return again(409, "already_frozen")
    return redirect(request, f"/demonstrations/{stored.slug}?frozen=1")


@router.get("/demonstrations/{ref}/amendments")
def amendments_page(request: Request, state: State, session: SignedIn, stored: Seen) -> Response:
    amendments = views.amendments(state, stored)
    return page(request, "amendments.html", session, d=stored, amendments=amendments)


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> Response:
    """The console's icon where browsers look for it unasked (downloads, API answers): no 404 in their console."""
    icon = resources.files("api.console").joinpath("static", "favicon.svg").read_bytes()
    return Response(icon, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})


@router.get("/static/fonts/{name}", response_class=FileResponse)
def font(name: str) -> Response:
    """The report's Korean font, served from the server's own copy (fonts-nanum): nothing comes from elsewhere."""
    try:
        files = korean_font_files()
    except FontMissing:
        raise HTTPException(404, "the Korean font is not installed on this server") from None
    if name not in files:
        raise HTTPException(404, f"no font {name!r}")
    return FileResponse(files[name], media_type="font/ttf", headers={"Cache-Control": "public, max-age=86400"})


def _throttle(request: Request) -> SignInThrottle:
    throttle: SignInThrottle = request.app.state.console_sign_in
    return throttle


def _drawn_pages(request: Request) -> views.DrawnPages:
    pages: views.DrawnPages = request.app.state.console_pages
    return pages


def wants_page(request: Request) -> bool:
    """A browser asking for a page (HTML, not JSON), outside the API's ``/v1/`` and the console's static files."""
    path, accept = request.url.path, request.headers.get("accept", "")
    return not path.startswith(("/v1/", "/static/")) and "text/html" in accept and "json" not in accept


def not_found(request: Request, exc: Exception) -> Response:
    """The one 404 page: for a missing demonstration and for another tenant's alike."""
    return page(request, "not_found.html", console_session(request, request.app.state.pilot), status=404)


def sign_in_needed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInNeeded)
    return redirect(request, f"/sign-in?next={quote(exc.back_to, safe='/')}")


def csrf_refused(request: Request, exc: Exception) -> Response:
    return page(request, "refused.html", console_session(request, request.app.state.pilot), status=403)
