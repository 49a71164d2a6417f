"""Request body size limits, enforced while the body streams in (never after buffering it whole).

Every request may carry at most ``max_body_bytes``; the admin's uploads (creating a campaign, adding
samples or tasks) may carry ``max_upload_bytes``, but only once the caller is known to be the admin
(Bearer token on the API, signed-in session on the pages), so nobody else can make the server read
that much. A declared Content-Length over the limit is refused before reading; a streamed body is
refused with 413 as soon as it passes the limit.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UPLOAD_PATHS = re.compile(r"/admin/campaigns|/api/v1/campaigns(/\d{1,10}/(samples|tasks))?")
IsAdmin = Callable[[Scope], Awaitable[bool]]


class BodyTooLarge(HTTPException):
    """The request body passed its limit (413); the message says which limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class BodyLimit:
    """ASGI middleware applying the limits described in the module docstring."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_upload_bytes: int, is_admin: IsAdmin) -> None:
        self.app, self.max_body, self.max_upload, self.is_admin = app, max_body_bytes, max_upload_bytes, is_admin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.max_body
        if scope["method"] == "POST" and UPLOAD_PATHS.fullmatch(scope["path"]) and await self.is_admin(scope):
            limit = self.max_upload
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(scope, send, BodyTooLarge(limit))
            return
        await self.app(scope, _counting(receive, limit), send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _counting(receive: Receive, limit: int) -> Receive:
    """A receive() that raises BodyTooLarge once more than ``limit`` body bytes arrived."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return counted


async def _refuse(scope: Scope, send: Send, exc: BodyTooLarge) -> None:
    """Answer 413 without reading the body (JSON for the API, plain text for the pages)."""
    api = scope["path"].startswith("/api/")
    body = orjson.dumps({"detail": exc.detail}) if api else f"413: {exc.detail}\n".encode()
    headers: list[Any] = [(b"content-type", b"application/json" if api else b"text/plain; charset=utf-8"),
                          (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
