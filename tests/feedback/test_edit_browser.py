"""Real browser on an edit task: the live word diff follows the typing, stays inert, and the edit is stored."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

from rlhfkit.feedback.models import Annotation

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ADMIN = {"Authorization": "Bearer admin-test-token-0123456789abcdef"}
ORIGINAL = "The soup was cold and the bread was stale."


def test_edit_page_shows_a_live_word_diff_and_stores_the_rewrite(live_server: Any, chromium: Any) -> None:
    with httpx.Client(base_url=live_server.url, headers=ADMIN, timeout=30) as client:
        cid = client.post("/api/v1/campaigns", json={"name": "edits", "kind": "edit",
                                                     "samples": [{"prompt": "Review of the Old Spoon diner:",
                                                                  "response": ORIGINAL}]}).json()["id"]
        token = client.post("/api/v1/annotators", json={"name": "Eve", "campaign_ids": [cid]}).json()["token"]
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(f"{live_server.url}/login")
    page.fill("#token", token)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.goto(f"{live_server.url}/campaigns/{cid}/task")
    assert page.input_value("[data-testid=edit-text]") == ORIGINAL
    assert page.inner_text("[data-testid=diff-summary]") == "no changes yet"
    rewrite = 'The soup was hot and the bread was fresh <img src=x onerror="window.pwned=1">.'
    page.fill("[data-testid=edit-text]", rewrite)
    expect(page.locator("[data-testid=diff-summary]")).not_to_have_text("no changes yet")
    inserted = page.eval_on_selector_all("#edit-diff ins", "els => els.map(e => e.textContent)")
    deleted = page.eval_on_selector_all("#edit-diff del", "els => els.map(e => e.textContent)")
    assert "hot" in inserted[0] and "cold" in deleted[0] and any("<img" in text for text in inserted)
    assert page.inner_text("#edit-diff").replace("\n", " ").startswith("The soup was ")
    assert page.evaluate("document.querySelectorAll('#edit-diff img').length") == 0
    assert page.evaluate("window.pwned === undefined")
    with page.expect_navigation():
        page.click("[data-testid=submit-edit]")
    assert page.locator("[data-testid=done]").is_visible()
    with live_server.store.read_session() as s:
        (answer,) = s.scalars(select(Annotation).where(Annotation.campaign_id == cid)).all()
        assert answer.resolved == {"text": rewrite} and answer.source == "web"
    assert not [e for e in errors if "Content Security Policy" in e], errors
    page.close()
