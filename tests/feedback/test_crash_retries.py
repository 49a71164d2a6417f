"""Client retry rules against a scripted transport: the same idempotency key on every retry, no retry that
could duplicate a row, bounded giving up, Retry-After honoured."""

from __future__ import annotations

import json

import httpx
import pytest

from rlhfkit.feedback.client import FeedbackAPIError, FeedbackClient, FeedbackUnavailableError


class FlakyServer:
    """Stores submissions by idempotency key; fails the first calls in scripted ways."""

    def __init__(self, script: list[str]) -> None:
        self.script = list(script)
        self.stored: dict[str, dict] = {}
        self.seen_keys: list[str] = []
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        step = self.script.pop(0) if self.script else "ok"
        body = json.loads(request.content) if request.content else {}
        if request.url.path.endswith("/annotations"):
            self.seen_keys.append(body["idempotency_key"])
        if step == "refuse":
            raise httpx.ConnectError("connection refused", request=request)
        if step == "busy":
            return httpx.Response(503, json={"detail": "database busy"}, headers={"Retry-After": "0.01"})
        if step == "error":
            return httpx.Response(500, json={"detail": "boom"})
        if step == "commit-then-drop" or step == "ok":
            if request.url.path.endswith("/annotations"):
                key = body["idempotency_key"]
                replayed = key in self.stored
                self.stored.setdefault(key, {"annotation_id": len(self.stored) + 1, "answer": body["answer"]})
                if step == "commit-then-drop":
                    raise httpx.ReadError("connection reset after commit", request=request)
                return httpx.Response(200 if replayed else 201, json={**self.stored[key], "replayed": replayed})
            if step == "commit-then-drop":
                raise httpx.ReadError("connection reset", request=request)
            if request.url.path.endswith("/next"):
                return httpx.Response(204)
            return httpx.Response(201, json={"id": 1, "name": body.get("name")})
        raise AssertionError(step)


def client_for(server: FlakyServer, **kw) -> FeedbackClient:
    kw = {"retry_for_s": 2.0, "backoff_s": 0.001, "max_backoff_s": 0.01, **kw}
    return FeedbackClient("http://test", "tok", transport=httpx.MockTransport(server), **kw)


def test_submit_retries_with_the_same_key_and_is_stored_once() -> None:
    server = FlakyServer(["refuse", "busy", "error", "commit-then-drop"])
    client = client_for(server)
    reply = client.submit(7, {"choice": "left"}, idempotency_key="key-00000001")
    assert reply["replayed"] is True and reply["annotation_id"] == 1  # the dropped attempt had stored it
    assert server.seen_keys == ["key-00000001"] * 5
    assert len(server.stored) == 1
    assert client.retries == 4
    assert dict(client.failures) == {"connect": 1, "HTTP 503": 1, "HTTP 500": 1, "ReadError": 1}


def test_generated_key_is_reused_across_retries() -> None:
    server = FlakyServer(["error", "commit-then-drop"])
    client_for(server).submit(1, {"label": "good"})
    assert len(set(server.seen_keys)) == 1 and len(server.seen_keys) == 3 and len(server.stored) == 1


def test_create_is_not_repeated_after_a_lost_answer() -> None:
    server = FlakyServer(["commit-then-drop"])
    with pytest.raises(FeedbackUnavailableError, match="not retried"):
        client_for(server).create_annotator("alice", [1])
    assert server.calls == 1
    # ... but a refused connection (nothing sent) or a 503 (rolled back) is retried
    server = FlakyServer(["refuse", "busy"])
    assert client_for(server).create_annotator("bob")["name"] == "bob"
    assert server.calls == 3


def test_gives_up_within_the_budget_and_reports_errors() -> None:
    server = FlakyServer(["refuse"] * 10_000)
    client = client_for(server, retry_for_s=0.2)
    with pytest.raises(FeedbackUnavailableError, match="gave up after 0.2 s: cannot connect"):
        client.health()
    assert 1 < server.calls < 10_000

    def forbidden(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"detail": "assignment 3 was already answered"})
    other = FeedbackClient("http://test", "tok", transport=httpx.MockTransport(forbidden))
    with pytest.raises(FeedbackAPIError, match="409: assignment 3 was already answered") as err:
        other.submit(3, {"choice": "tie"})
    assert err.value.status == 409


def test_next_returns_none_on_204_and_token_header() -> None:
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(204)
    client = FeedbackClient("http://test/", "secret-token", transport=httpx.MockTransport(handler))
    assert client.next_assignment(5) is None
    assert client.with_token("other-token").next_assignment(5) is None
    assert seen == ["Bearer secret-token", "Bearer other-token"]
