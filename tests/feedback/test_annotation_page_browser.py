"""Real browser on a chat pairwise task: turns, Markdown and progress shown, strength picked and stored, nothing runs."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

playwright_api = pytest.importorskip("playwright.sync_api")

from rlhfkit.feedback.models import Annotation, Sample

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ADMIN = {"Authorization": "Bearer admin-test-token-0123456789abcdef"}
TURNS = [{"role": "system", "content": "You write Python."},
         {"role": "user", "content": "Indent `f` please <img src=x onerror=\"window.pwned=1\">"}]
CODE = "def f():\n    return  1"


def test_chat_task_renders_turns_and_markdown_and_stores_the_strength(live_server: Any, chromium: Any) -> None:
    prompt = "".join(f"{t['role']}: {t['content']}\n" for t in TURNS)
    with httpx.Client(base_url=live_server.url, headers=ADMIN, timeout=30) as client:
        cid = client.post("/api/v1/campaigns", json={"name": "chat", "kind": "pairwise", "gold_rate": 0.0, "samples": [
            {"prompt": prompt, "response": f"```python\n{CODE}\n```", "meta": {"prompt_messages": TURNS}},
            {"prompt": prompt, "response": "1. [link](javascript:window.pwned=2)\n2. *two*",
             "meta": {"prompt_messages": TURNS}}]}).json()["id"]
        token = client.post("/api/v1/annotators", json={"name": "Ann", "campaign_ids": [cid]}).json()["token"]
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script("document.addEventListener('securitypolicyviolation', () => { window.__csp = 1; });")
    page = context.new_page()
    page.goto(f"{live_server.url}/login")
    page.fill("#token", token)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.goto(f"{live_server.url}/campaigns/{cid}/task")
    assert page.inner_text("[data-testid=progress]").strip() == "0 of 1"
    roles = page.eval_on_selector_all("[data-testid=turn] .role", "els => els.map(e => e.textContent)")
    assert roles == ["system", "user"]
    assert page.inner_text("[data-testid=turn] code") == "f"
    assert page.inner_text(".response pre") == CODE + "\n", "code blocks keep their whitespace"
    assert page.eval_on_selector_all(".response ol li", "els => els.length") == 2
    assert page.evaluate("document.querySelectorAll('main img, main a[href^=javascript]').length") == 0
    much = page.locator("input[name=strength][value=much]")
    page.click("label.strength-opt:has(input[value=much])")
    assert much.is_checked()
    page.click("label.strength-opt:has(input[value=much])")
    assert not much.is_checked(), "clicking the chosen strength again clears it"
    page.click("label.strength-opt:has(input[value=much])")
    shown_first = page.eval_on_selector("[data-testid=response-left]", "el => el.querySelector('pre') !== null")
    with page.expect_navigation():
        page.keyboard.press("1")
    assert page.locator("[data-testid=done]").is_visible()
    assert page.evaluate("window.pwned === undefined && window.__csp === undefined")
    with live_server.store.read_session() as s:
        (answer,) = s.scalars(select(Annotation).where(Annotation.campaign_id == cid)).all()
        winner = s.get(Sample, answer.resolved["winner"])
        assert answer.resolved["margin"] == 1.0 and answer.source == "web"
        assert winner is not None and winner.response.startswith("```") == shown_first, "key 1 picks the left response"
    context.close()
