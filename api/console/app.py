"""Adding the console to the API's app: its pages at ``/``, its stylesheet, and how its refusals are answered."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.console import live, pages
from api.console.views import DrawnPages
from api.console.web import CsrfRefused, SignInThrottle


def install(app: FastAPI) -> None:
    app.state.console_pages = DrawnPages()
    app.state.console_sign_in = SignInThrottle()
    app.include_router(pages.router)
    app.include_router(live.router)  # the live line and the one-time sign-in link
    static = resources.files("api.console").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="console-static")
    app.add_exception_handler(pages.SignInNeeded, pages.sign_in_needed)
    app.add_exception_handler(pages.PageNotFound, pages.not_found)
    app.add_exception_handler(CsrfRefused, pages.csrf_refused)
