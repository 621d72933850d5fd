"""Limits on what a request may carry, so that a hostile one costs nothing and gets a clear answer.

- A body larger than ``MAX_BODY_BYTES`` is refused with 413 before it is read whole: a plan is a few kilobytes,
  and nothing the API takes comes near a megabyte.
- A query parameter given twice is refused with 422, rather than silently taking one of the values.
- A body that cannot be parsed at all (not UTF-8, nested deeper than the parser goes) says why, with 400.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPES

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
