"""CSRF and session: every form post needs this session's token and a same-origin Origin; cookies are signed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from rlhfkit.feedback.models import Annotation, Annotator, Campaign

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
IDEM = re.compile(r'name="idempotency_key" value="([^"]+)"')


def _client(api: Any) -> TestClient:
    return TestClient(api.client.app, base_url="http://testserver", follow_redirects=False)


def _csrf(client: TestClient, path: str) -> str:
    return CSRF.search(client.get(path).text).group(1)


def _sign_in(api: Any, token: str, landing: str) -> tuple[TestClient, str]:
    client = _client(api)
    resp = client.post("/login", data={"token": token, "csrf_token": _csrf(client, "/login")})
    assert resp.status_code == 303
    return client, _csrf(client, landing)


def _count(api: Any, model: Any) -> int:
    with api.store.read_session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_login_requires_this_sessions_csrf_token(sqlite_api: Any) -> None:
    token = sqlite_api.invite("a", [])[1]
    attacker, victim = _client(sqlite_api), _client(sqlite_api)
    foreign = _csrf(attacker, "/login")
    _csrf(victim, "/login")
    assert victim.post("/login", data={"token": token}).status_code == 403
    assert victim.post("/login", data={"token": token, "csrf_token": "forged"}).status_code == 403
    assert victim.post("/login", data={"token": token, "csrf_token": foreign}).status_code == 403
    assert "role" not in victim.get("/").headers["location"] and victim.get("/").headers["location"] == "/login"
    wrong = victim.post("/login", data={"token": "nope", "csrf_token": _csrf(victim, "/login")})
    assert wrong.status_code == 401 and "not valid" in wrong.text


def test_answer_form_without_valid_csrf_stores_nothing(sqlite_api: Any) -> None:
    c = sqlite_api.campaign(samples=[{"prompt": "p", "response": "a"}, {"prompt": "p", "response": "b"}])
    _, token = sqlite_api.invite("a", [c["id"]])
    client, _ = _sign_in(sqlite_api, token, "/tasks")
    page = client.get(f"/campaigns/{c['id']}/task").text
    csrf, key = CSRF.search(page).group(1), IDEM.search(page).group(1)
    action = re.search(r'action="(/assignments/\d+/answer)"', page).group(1)
    form = {"idempotency_key": key, "choice": "left"}
    assert client.post(action, data=form).status_code == 403
    assert client.post(action, data={**form, "csrf_token": csrf + "x"}).status_code == 403
    cross = client.post(action, data={**form, "csrf_token": csrf}, headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403 and "Origin" in cross.text
    assert client.post(action, data={**form, "csrf_token": csrf}, headers={"Origin": "null"}).status_code == 403
    assert _count(sqlite_api, Annotation) == 0
    ok = client.post(action, data={**form, "csrf_token": csrf}, headers={"Origin": "http://testserver"})
    assert ok.status_code == 303 and ok.headers["location"] == f"/campaigns/{c['id']}/task"
    again = client.post(action, data={**form, "csrf_token": csrf})  # double click / browser retry: same key
    assert again.status_code == 303
    assert _count(sqlite_api, Annotation) == 1
    with sqlite_api.store.session() as s:
        assert s.scalars(select(Annotation.source)).one() == "web"


def test_admin_forms_need_csrf(sqlite_api: Any) -> None:
    c = sqlite_api.campaign()
    client, csrf = _sign_in(sqlite_api, sqlite_api.admin()["Authorization"][7:], "/admin")
    before = _count(sqlite_api, Annotator)
    assert client.post(f"/admin/campaigns/{c['id']}/invite", data={"name": "x"}).status_code == 403
    assert client.post(f"/admin/campaigns/{c['id']}/close", data={"csrf_token": "bad"}).status_code == 403
    files = {"samples": ("s.jsonl", b'{"prompt": "p", "response": "r"}\n')}
    assert client.post("/admin/campaigns", data={"name": "n", "kind": "binary"}, files=files).status_code == 403
    assert _count(sqlite_api, Annotator) == before and _count(sqlite_api, Campaign) == 1
    invited = client.post(f"/admin/campaigns/{c['id']}/invite", data={"name": "x", "csrf_token": csrf})
    assert invited.status_code == 201 and "ann_" in invited.text
    created = client.post("/admin/campaigns", data={"name": "n", "kind": "binary", "csrf_token": csrf}, files=files)
    assert created.status_code == 303 and _count(sqlite_api, Campaign) == 2
    bad_file = client.post("/admin/campaigns", data={"name": "n", "kind": "binary", "csrf_token": csrf},
                           files={"samples": ("bad.jsonl", b'{"prompt": 1}\n')})
    assert bad_file.status_code == 422 and "bad.jsonl:1" in bad_file.text


def test_logout_needs_csrf_and_clears_the_session(sqlite_api: Any) -> None:
    client, csrf = _sign_in(sqlite_api, sqlite_api.admin()["Authorization"][7:], "/admin")
    assert client.post("/logout").status_code == 403
    assert client.get("/admin").status_code == 200
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 303
    assert client.get("/admin").headers["location"] == "/login"


def test_session_cookie_is_signed_httponly_and_bound_to_the_installation(sqlite_api: Any, tmp_path: Path) -> None:
    from rlhfkit.feedback.server.app import create_app
    from rlhfkit.feedback.settings import FeedbackSettings

    client = _client(sqlite_api)
    resp = client.post("/login", data={"token": sqlite_api.admin()["Authorization"][7:], "csrf_token": _csrf(client, "/login")})
    cookie = resp.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    value = client.cookies["rlhfkit_session"]
    tampered = _client(sqlite_api)
    tampered.cookies.set("rlhfkit_session", value[:-3] + ("AAA" if not value.endswith("AAA") else "BBB"))
    assert tampered.get("/admin").headers["location"] == "/login"
    other = create_app(FeedbackSettings(state_dir=tmp_path / "other-install", db_url=f"sqlite:///{tmp_path / 'o.db'}"))
    foreign = TestClient(other, base_url="http://testserver", follow_redirects=False, cookies={"rlhfkit_session": value})
    assert foreign.get("/admin").headers["location"] == "/login", "another installation's key must not accept this cookie"
    other.state.store.close()


@pytest.mark.parametrize("path", ["/login", "/", "/no-such-page"])
def test_security_headers_on_pages(sqlite_api: Any, path: str) -> None:
    headers = sqlite_api.client.get(path, follow_redirects=False).headers
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin" and headers["cross-origin-opener-policy"] == "same-origin"
    assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-store"


def test_api_answers_carry_only_json_headers(sqlite_api: Any) -> None:
    """JSON is never rendered as a document: nosniff and no-store, no page policies (hot path and routes alike)."""
    c = sqlite_api.campaign(gold_rate=0.0)
    _, token = sqlite_api.invite("a", [c["id"]])
    task = sqlite_api.next(c["id"], token)
    submit = sqlite_api.submit(task.json()["assignment_id"], token, {"choice": "left"})
    unauthenticated = sqlite_api.client.get(f"/api/v1/campaigns/{c['id']}/next")
    for resp in (sqlite_api.client.get("/api/v1/health"), task, submit, unauthenticated):
        assert resp.headers["x-content-type-options"] == "nosniff" and resp.headers["cache-control"] == "no-store"
        assert resp.headers["content-type"] == "application/json"
        for name in ("content-security-policy", "x-frame-options", "referrer-policy", "cross-origin-opener-policy",
                     "set-cookie"):
            assert name not in resp.headers, (resp.request.url, name)
    assert (task.status_code, submit.status_code, unauthenticated.status_code) == (200, 201, 401)
