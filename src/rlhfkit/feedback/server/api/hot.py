"""A lean ASGI path for the two requests that carry a campaign's load: GET next task, POST an answer.

Why: profiled in process, FastAPI's routing (40+ routes matched in turn) and dependency solving cost
~1 ms per request, 80% of the server's CPU for a next+submit pair once the database work was
group-committed. This middleware recognises exactly those two requests when they are ordinary (a
Bearer token already in the app's TokenCache and belonging to an annotator; for POST a JSON content type
and a body that ``SubmissionIn`` accepts) and runs them straight on the AnnotationService. Everything else, including
every case that ends in 401/403/422 from the framework, falls through to the FastAPI routes in
``routes/assignments.py``, which stay the reference implementation with the same answers. It is the
outermost middleware and sets the API's few response headers (``API_HEADERS``) itself.
"""

from __future__ import annotations

import email.message
import re
from typing import Any, Optional

import orjson
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rlhfkit.feedback.crud import Principal
from rlhfkit.feedback.security import hash_token
from rlhfkit.feedback.server.api.errors import error_status
from rlhfkit.feedback.server.api.schemas import SubmissionIn

NEXT = re.compile(r"/api/v1/campaigns/(\d{1,9})/next")
SUBMIT = re.compile(r"/api/v1/assignments/(\d{1,9})/annotations")
MAX_BODY = 64 * 1024  # a submission is small (critique <= 10,000 characters); bigger ones take the normal route
API_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store")]  # on every /api/ answer


class HotRoutes:
    """ASGI middleware: serve ordinary next/submit requests directly, pass everything else on."""

    def __init__(self, app: ASGIApp, *, state: Any) -> None:
        self.app = app
        self.state = state  # the FastAPI app's state: .service and .tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if method == "GET" and (match := NEXT.fullmatch(path)):
            me = self._annotator(scope)
            if me is not None:
                await self._next(int(match.group(1)), me, send)
                return
        elif method == "POST" and (match := SUBMIT.fullmatch(path)) and is_json_content_type(scope):
            me = self._annotator(scope)
            if me is not None:
                body, complete = await _read_body(receive)
                submission = _parse(body) if complete else None
                if submission is not None:
                    await self._submit(int(match.group(1)), me, submission, send)
                    return
                receive = _replay(body, receive)
        await self.app(scope, receive, send)

    def _annotator(self, scope: Scope) -> Optional[Principal]:
        """The cached annotator behind the Bearer token, or None (then the normal route decides)."""
        for name, value in scope["headers"]:
            if name == b"authorization":
                if value[:7].lower() != b"bearer ":
                    return None
                token = value[7:].strip().decode("latin-1")
                if not token:
                    return None
                principal = self.state.tokens.get(hash_token(token))
                return principal if principal is not None and not principal.is_admin else None
        return None

    async def _next(self, campaign_id: int, me: Principal, send: Send) -> None:
        assert me.annotator_id is not None
        try:
            view = await self.state.service.next_assignment(campaign_id=campaign_id, annotator_id=me.annotator_id)
        except Exception as exc:  # noqa: BLE001 - mapped exactly as the app's exception handlers do
            await _error(send, exc)
            return
        if view is None:
            await _respond(send, 204, b"")
        else:
            await _respond(send, 200, orjson.dumps(view))

    async def _submit(self, assignment_id: int, me: Principal, body: SubmissionIn, send: Send) -> None:
        assert me.annotator_id is not None
        try:
            view, replayed = await self.state.service.submit(
                assignment_id=assignment_id, annotator_id=me.annotator_id, idempotency_key=body.idempotency_key,
                answer=body.answer, critique=body.critique, time_spent_ms=body.time_spent_ms, source="api")
        except Exception as exc:  # noqa: BLE001
            await _error(send, exc)
            return
        await _respond(send, 200 if replayed else 201, orjson.dumps(view))


def is_json_content_type(scope: Scope) -> bool:
    """Whether the request says its body is JSON, by FastAPI's rule (strict content type): a
    ``Content-Type`` of application/json or application/*+json; none at all is not JSON."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            message = email.message.Message()
            message["content-type"] = value.decode("latin-1")
            subtype = message.get_content_subtype()
            return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))
    return False


async def _read_body(receive: Receive) -> tuple[list[Message], bool]:
    """The request's body messages; complete=False when it is too big for this path."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, False
        size += len(message.get("body", b""))
        if size > MAX_BODY:
            return messages, False
        if not message.get("more_body", False):
            return messages, True


def _parse(messages: list[Message]) -> Optional[SubmissionIn]:
    try:
        return SubmissionIn.model_validate_json(b"".join(m.get("body", b"") for m in messages))
    except ValidationError:
        return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive() that hands the already-read messages to the normal route first."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _respond(send: Send, status: int, body: bytes, headers: Optional[dict[str, str]] = None) -> None:
    raw = [(b"content-length", str(len(body)).encode()), *API_HEADERS]
    if body:
        raw.append((b"content-type", b"application/json"))
    raw.extend((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _error(send: Send, exc: Exception) -> None:
    mapped = error_status(exc)
    if mapped is None:
        raise exc
    status, headers = mapped
    await _respond(send, status, orjson.dumps({"detail": str(exc)}), headers)
