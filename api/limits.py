"""Limits on what a request may carry, so that a hostile one costs nothing and gets a clear answer.

- A body larger than ``MAX_BODY_BYTES`` is refused with 413 before it is read whole: a plan is a few kilobytes,
  and nothing the API takes comes near a megabyte.
- A query parameter given twice is refused with 422, rather than silently taking one of the values; so is a path
  or query parameter holding NUL (``%00``).
- A body is read as the collector reads a device's payload (``pilot_core.contract.parse_json``): one UTF-8 JSON
  document, every key once in an object. Anything else (UTF-16, a key given twice, truncated JSON, nested deeper
  than the parser goes, a NUL character in a string) is refused with 400 saying why; a body sent as another content
  type than JSON with 415.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPES
from pilot_core.contract import PayloadError, parse_json

MAX_BODY_BYTES = 1024 * 1024


class BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes, whether or not it declares its length."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, send)
            return
        received = 0
        refused = False

        async def counted() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit and not refused:
                    refused = True
                    await self._refuse(scope, send)
                    return {"type": "http.disconnect"}  # the app stops reading; what it answers is dropped
            return message

        async def unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted, unless_refused)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = json.dumps(
            {
                "type": PROBLEM_TYPES + "body-too-large",
                "title": "Request body too large",
                "status": 413,
                "detail": f"the body may hold at most {self.limit:,} bytes",
                "instance": scope.get("path", ""),
            }
        ).encode()
        headers = [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def single_valued_query(request: Request) -> None:
    """Refuse ``?version=1&version=2``: which one the caller meant is a guess."""
    seen: set[str] = set()
    repeated = []
    for name, _ in parse_qsl(request.url.query, keep_blank_values=True):
        if name in seen and name not in repeated:
            repeated.append(name)
        seen.add(name)
    if repeated:
        message = "given more than once; give it once"
        raise RequestValidationError([{"loc": ("query", n), "msg": message, "type": "repeated"} for n in repeated])


def no_nul_in_names(request: Request) -> None:
    """Refuse ``%00`` in a path parameter or the query: every one names something looked up in SQL, whose text
    (PostgreSQL's) cannot hold NUL."""
    message = "holds the NUL character (U+0000)"
    problems = [("path", name) for name, value in request.path_params.items() if "\x00" in str(value)]
    if "%00" in request.url.query:
        problems += [("query", name) for name, value in parse_qsl(request.url.query) if "\x00" in name + value]
    if problems:
        raise RequestValidationError([{"loc": loc, "msg": message, "type": "nul"} for loc in problems])


class _StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = parse_json(body)  # PayloadError: FastAPI answers 400 with it as the cause
            except PayloadError as exc:
                # NUL is UTF-8, but never in JSON text: UTF-16 or UTF-32 without a byte order mark.
                if b"\x00" in body and "UTF-8" not in exc.detail:
                    raise PayloadError("payload is not UTF-8: it holds NUL bytes (UTF-16 or UTF-32?)") from None
                raise
            if b"\\u0000" in body:  # only then can a string hold NUL (UTF-8 NUL bytes are refused above)
                _refuse_nul(self._json, ("body",))
        return self._json


def _refuse_nul(value: Any, where: tuple[str, ...]) -> None:
    """PostgreSQL's text cannot hold NUL, and no name or reason needs it: say where it is, before anything is stored."""
    if isinstance(value, str):
        if "\x00" in value:
            raise PayloadError(f"payload holds the NUL character (U+0000) in {'.'.join(where)}, which no text may hold")
    elif isinstance(value, dict):
        for key, item in value.items():
            named = (*where, json.dumps(key)[1:-1])
            _refuse_nul(key, named)
            _refuse_nul(item, named)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_nul(item, (*where, str(index)))


def _is_json(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


class JsonBodyRoute(APIRoute):
    """A route whose JSON body is parsed strictly, and whose body must be sent as JSON (415 otherwise)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def strict(request: Request) -> Response:
            request = _StrictJsonRequest(request.scope, request.receive)
            try:
                sent_body = takes_body and bool(await request.body())
            except ClientDisconnect:  # the client left, or BodyLimit refused the body and answered already
                return Response(status_code=400)
            if sent_body:
                content_type = request.headers.get("content-type")
                if not content_type or not _is_json(content_type):
                    sent = f"it was sent as {content_type}" if content_type else "it was sent with no Content-Type"
                    raise HTTPException(415, f"send the body as application/json; {sent}")
            return await handler(request)

        return strict
