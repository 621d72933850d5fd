"""Every error as RFC 9457 problem details (``application/problem+json``).

``type`` follows one scheme:

- ``about:blank`` for plain HTTP errors (an ``HTTPException``, an unknown path,
  a wrong method) and for unexpected failures (500); ``title`` is then the HTTP
  status phrase, as RFC 9457 asks.
- ``https://pilot-telemetry.dev/problems/<name>`` for problems of our own, where
  ``<name>`` is the kebab-cased name of the refusing exception class
  (``PlanFrozen`` → ``plan-frozen``, ``NotFound`` → ``not-found``), or
  ``invalid-request`` for a request that fails validation. These URIs identify
  the kind of problem; clients may branch on them, and they stay stable as long
  as the classes keep their names (a test pins them).

``instance`` is the request path. A 500 says nothing of its cause: the
exception is logged, never sent.
"""

from __future__ import annotations

import http
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from adapters.sql.errors import RepositoryError
from pilot_core.contract import PayloadError

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPES = "https://pilot-telemetry.dev/problems/"
INVALID_REQUEST = PROBLEM_TYPES + "invalid-request"
_SHOWN_ERRORS = 3  # in the summary of an invalid request; all of them are in `errors`
UNPARSABLE = "it must be one UTF-8 JSON document, each key once in an object, nested at most a few hundred levels deep"
AUTH_ERRORS = {401: "No API key was sent, or it is not valid (unknown, revoked or mistyped)"}

logger = logging.getLogger(__name__)


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where the refused value is: body, query or path, then the keys")
    msg: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": PROBLEM_TYPES + "plan-frozen",
                    "title": "Plan is frozen",
                    "status": 409,
                    "detail": "version 1 is frozen (sha256:9f2c…); amend it with a reason instead",
                    "instance": "/v1/demonstrations/1",
                }
            ]
        }
    )

    type: str = Field(default="about:blank", description="URI naming the kind of problem")
    title: str = Field(description="Short summary of the kind of problem")
    status: int = Field(description="The HTTP status code")
    detail: str | None = Field(default=None, description="What went wrong this time")
    instance: str | None = Field(default=None, description="Path of the request that failed")
    errors: list[FieldError] | None = Field(default=None, description="Invalid requests only: every refused value")


def problem_responses(descriptions: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route: the Problem model under each error status."""
    return {status: {"model": Problem, "description": text} for status, text in descriptions.items()}


def problem_type(refusal: type[RepositoryError]) -> str:
    """``PlanFrozen`` → ``https://pilot-telemetry.dev/problems/plan-frozen``."""
    return PROBLEM_TYPES + re.sub(r"(?<!^)(?=[A-Z])", "-", refusal.__name__).lower()


def use_problem_details(app: FastAPI) -> None:
    """Answer every error of ``app`` with problem details, and say so in its OpenAPI document."""
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(RepositoryError, _repository_error)
    app.add_exception_handler(Exception, _unexpected)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document_problems(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _respond(request: Request, problem: Problem, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        problem.model_dump(mode="json", exclude_none=True) | {"instance": request.url.path},
        status_code=problem.status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    detail = None if exc.detail is None else str(exc.detail)
    if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI could not parse the body at all
        detail = f"the body could not be parsed ({UNPARSABLE})"
        if isinstance(exc.__cause__, PayloadError):  # api.limits parses bodies as the collector does payloads
            detail = _unreadable_body(exc.__cause__.detail)
        elif isinstance(exc.__cause__, RecursionError):
            detail = "the JSON body is nested too deeply to parse"
        elif isinstance(exc.__cause__, UnicodeDecodeError):
            detail = "the body is not UTF-8 text"
    problem = Problem(title=_phrase(exc.status_code), status=exc.status_code, detail=detail)
    return _respond(request, problem, exc.headers)  # e.g. Allow on a 405


def _unreadable_body(reason: str) -> str:
    """The collector's words for an unreadable payload, said of a request body."""
    if reason.startswith("payload "):
        return "the body " + reason.removeprefix("payload ")
    if reason.startswith("not valid JSON"):
        return "the body is " + reason
    return "the body is not one JSON document: " + reason


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Only where and what: the refused input itself may be large, or a secret.
    errors = [FieldError(loc=list(e["loc"]), msg=e["msg"]) for e in exc.errors()]
    summary = "; ".join(f"{'.'.join(str(part) for part in e.loc)}: {e.msg}" for e in errors[:_SHOWN_ERRORS])
    if len(errors) > _SHOWN_ERRORS:
        summary += f"; and {len(errors) - _SHOWN_ERRORS} more"
    problem = Problem(
        type=INVALID_REQUEST,
        title="Invalid request",
        status=422,
        detail=f"{len(errors)} invalid value{'s' if len(errors) != 1 else ''}: {summary}",
        errors=errors,
    )
    return _respond(request, problem)


async def _repository_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RepositoryError)
    if exc.status >= 500:
        return await _unexpected(request, exc)
    problem = Problem(type=problem_type(type(exc)), title=exc.title, status=exc.status, detail=str(exc))
    return _respond(request, problem)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    problem = Problem(title=_phrase(500), status=500, detail="The server failed to answer; the error is in its log.")
    return _respond(request, problem)


def _document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Error responses as ``application/problem+json`` with the Problem schema, the automatic 422s included."""
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            # What api.limits refuses, on whichever operation it happens.
            responses.setdefault("422", {"description": "A query parameter was given more than once"})
            if "requestBody" in operation:
                responses.setdefault("400", {"description": "The body could not be parsed: " + UNPARSABLE})
                responses.setdefault("413", {"description": "The body is larger than the API takes"})
                responses.setdefault("415", {"description": "The body was not sent as application/json"})
            for status, response in responses.items():
                if not (status.startswith(("4", "5")) or status == "default"):
                    continue
                content = response.setdefault("content", {})
                documented = content.pop("application/json", {})
                content[PROBLEM_MEDIA_TYPE] = {**documented, "schema": problem_ref}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(problem.pop("$defs", {}))
    components["Problem"] = problem
    # FastAPI's own validation error schemas describe nothing we send any more.
    for name in ("HTTPValidationError", "ValidationError"):
        if name in components and not _referenced(schema, name):
            del components[name]
    return schema


def _referenced(schema: dict[str, Any], name: str) -> bool:
    """Whether anything but the component itself refers to components/schemas/``name``."""
    others = {key: value for key, value in schema["components"]["schemas"].items() if key != name}
    rest = {**schema, "components": {**schema["components"], "schemas": others}}
    return json.dumps(f"#/components/schemas/{name}") in json.dumps(rest)
