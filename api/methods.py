"""HEAD is answered wherever GET is (RFC 9110 §9.3.2): the same status and headers, without the body.

FastAPI's routes take only the methods they declare, so HEAD got 405 everywhere, though link checkers, monitors
and `curl -I` send it. One exception: the one-time sign-in link, which a GET spends; a HEAD (a mail scanner's,
say) must not, so it keeps its 405 there.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

NOT_FOR_HEAD = frozenset({"/sign-in/link"})


class HeadAsGet:
    """ASGI middleware: a HEAD request is handled as a GET, and only the response's start is sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD" or scope["path"] in NOT_FOR_HEAD:
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] != "http.response.body":
                await send(message)
            elif not message.get("more_body", False):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app({**scope, "method": "GET"}, receive, headers_only)
