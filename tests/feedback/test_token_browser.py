"""Real browser on the admin's token page: rotate an annotator's token (new one shown once), revoke it."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ADMIN_TOKEN = "admin-test-token-0123456789abcdef"


def test_admin_rotates_and_revokes_a_token_in_the_browser(live_server: Any, chromium: Any) -> None:
    with httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30) as client:
        cid = client.post("/api/v1/campaigns", json={"name": "c", "kind": "binary",
                                                     "samples": [{"prompt": "p", "response": "r"}]}).json()["id"]
        aid = client.post("/api/v1/annotators", json={"name": "Bob", "campaign_ids": [cid]}).json()["id"]
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
    page.goto(f"{live_server.url}/login")
    page.fill("#token", ADMIN_TOKEN)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    with page.expect_navigation():
        page.click("text=Tokens")
    assert "Bob" in page.inner_text(f"[data-testid=annotator-token-{aid}]")
    with page.expect_navigation():
        page.click(f"[data-testid=rotate-annotator-{aid}]")
    token = page.inner_text("[data-testid=issued-token]").strip()
    if os.environ.get("RLHFKIT_SHOTS"):
        page.screenshot(path=os.path.join(os.environ["RLHFKIT_SHOTS"], "tokens.png"), full_page=True)
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{live_server.url}/api/v1/campaigns/{cid}/next", headers=headers).status_code == 200
    with page.expect_navigation():
        page.click(f"[data-testid=revoke-annotator-{aid}]")
    assert "yes" in page.inner_text(f"[data-testid=annotator-token-{aid}]")
    assert httpx.get(f"{live_server.url}/api/v1/campaigns/{cid}/next", headers=headers).status_code == 401
    assert not errors, errors
    page.close()
