"""Adding the console to the API's app: its pages at ``/``, its stylesheet, and how its refusals are answered.

``install`` must follow ``api.problems.use_problem_details``: a 404 not meant for a browser goes to its handler.
"""

from __future__ import annotations

import inspect
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

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
    answer_problem = app.exception_handlers[HTTPException]  # the API's problem details (api.problems)

    async def http_error(request: Request, exc: Exception) -> Response:
        """A browser asking for a path nothing serves gets the console's 404 page; API clients, problem details."""
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404 and pages.wants_page(request):
            return pages.not_found(request, exc)
        answer = answer_problem(request, exc)
        return await answer if inspect.isawaitable(answer) else answer

    app.add_exception_handler(HTTPException, http_error)
