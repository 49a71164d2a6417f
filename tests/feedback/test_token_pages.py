"""Admin token management in the web UI (list, revoke, rotate with CSRF) and the matching API routes."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
ISSUED = re.compile(r'data-testid="issued-token">([^<]+)<')


def _admin_browser(api: Any, token: str) -> tuple[TestClient, str]:
    """A web session signed in with an admin token, and its CSRF token."""
    client = TestClient(api.client.app, base_url="http://testserver", follow_redirects=False)
    csrf = CSRF.search(client.get("/login").text).group(1)
    assert client.post("/login", data={"token": token, "csrf_token": csrf}).status_code == 303
    return client, CSRF.search(client.get("/admin/tokens").text).group(1)


def test_tokens_page_lists_rotates_and_revokes(sqlite_api: Any) -> None:
    api = sqlite_api
    cid = api.campaign()["id"]
    aid, old = api.invite("ann <b>", [cid])
    second_admin = api.client.post("/api/v1/admin-tokens/1/rotate", headers=api.admin())  # API: old admin token revoked
    assert second_admin.status_code == 200
    admin_token = second_admin.json()["token"]
    assert api.client.get("/api/v1/tokens", headers=api.admin()).status_code == 401, "the rotated token stopped working"
    listed = api.client.get("/api/v1/tokens", headers=api.as_(admin_token)).json()
    assert [t["revoked_at"] is not None for t in listed["admin_tokens"]] == [True, False]

    client, csrf = _admin_browser(api, admin_token)
    page = client.get("/admin/tokens")
    assert page.status_code == 200
    assert "ann &lt;b&gt;" in page.text and 'data-testid="admin-token-2"' in page.text and admin_token not in page.text
    assert 'data-testid="revoke-admin-1"' not in page.text, "a revoked token has no buttons"

    assert client.post(f"/admin/tokens/annotators/{aid}/rotate", data={}).status_code == 403, "no CSRF token: refused"
    rotated = client.post(f"/admin/tokens/annotators/{aid}/rotate", data={"csrf_token": csrf})
    assert rotated.status_code == 201
    new = ISSUED.search(rotated.text).group(1)
    assert api.next(cid, old).status_code == 401 and api.next(cid, new).status_code == 200
    assert new not in client.get("/admin/tokens").text, "shown once"

    assert client.post(f"/admin/tokens/annotators/{aid}/revoke", data={"csrf_token": csrf}).status_code == 303
    assert api.next(cid, new).status_code == 401
    assert not api.client.get("/api/v1/tokens", headers=api.as_(admin_token)).json()["annotators"][0]["active"]

    own = client.post("/admin/tokens/admin/2/rotate", data={"csrf_token": csrf})  # the admin's own token
    assert own.status_code == 201 and "sign in again" in own.text
    assert client.get("/admin/tokens").status_code in (303, 307), "its web session ended with it"
    assert api.client.get("/api/v1/tokens", headers=api.as_(ISSUED.search(own.text).group(1))).status_code == 200


def test_token_times_are_shown_to_the_minute() -> None:
    from rlhfkit.feedback.server.web.tokens import minutes

    assert minutes("2026-12-05T14:24:03.562366+00:00") == "2026-12-05 14:24 UTC"
    assert minutes(None) is None
