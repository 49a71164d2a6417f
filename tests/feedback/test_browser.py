"""Real browser: headless Chromium signs in, answers every task kind with mouse and keyboard; the DB has it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from rlhfkit.feedback.models import Annotation, Task

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ADMIN = {"Authorization": "Bearer admin-test-token-0123456789abcdef"}


def _setup(url: str) -> dict[str, Any]:
    with httpx.Client(base_url=url, headers=ADMIN, timeout=30) as client:
        def campaign(kind: str, texts: list[str], **extra: Any) -> int:
            body = {"name": f"{kind} campaign", "kind": kind, "samples": [{"prompt": f"{kind} prompt", "response": t} for t in texts], **extra}
            resp = client.post("/api/v1/campaigns", json=body)
            assert resp.status_code == 201, resp.text
            return resp.json()["id"]

        ids = {"pairwise": campaign("pairwise", ["first answer", "second answer", "third answer"], allow_critique=True),
               "rating": campaign("rating", ["rate me", "rate me too"], scale=[1, 7]),
               "ranking": campaign("ranking", ["rank a", "rank b", "rank c"], rank_k=3),
               "binary": campaign("binary", ["judge me", "judge me too"])}
        invited = client.post("/api/v1/annotators", json={"name": "Browser Bob", "campaign_ids": list(ids.values())}).json()
    return {"ids": ids, "token": invited["token"], "annotator_id": invited["id"]}


def _answers(store: Any, annotator_id: int, campaign_id: int) -> list[Annotation]:
    with store.read_session() as s:
        return list(s.scalars(select(Annotation).where(Annotation.annotator_id == annotator_id,
                                                       Annotation.campaign_id == campaign_id).order_by(Annotation.id)))


def _sample_ids_by_text(store: Any, campaign_id: int) -> dict[str, int]:
    from rlhfkit.feedback.models import Sample

    with store.read_session() as s:
        return {smp.response: smp.id for smp in s.scalars(select(Sample).where(Sample.campaign_id == campaign_id))}


def test_sign_in_and_answer_every_kind_with_mouse_and_keyboard(live_server: Any, chromium: Any) -> None:
    world = _setup(live_server.url)
    ids, store, me = world["ids"], live_server.store, world["annotator_id"]
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    shots = os.environ.get("RLHFKIT_SCREENSHOT_DIR")

    page.goto(f"{live_server.url}/login")
    page.click("#token")
    page.keyboard.type(world["token"])
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.endswith("/tasks") and "Hello, Browser Bob" in page.inner_text("main")

    # pairwise: mouse click with a critique, keyboard "2", keyboard "t" (tie)
    by_text = _sample_ids_by_text(store, ids["pairwise"])
    page.click(f"[data-testid=start-{ids['pairwise']}]")
    if shots:
        page.screenshot(path=str(Path(shots) / "pairwise.png"), full_page=True)
    left = page.inner_text("[data-testid=response-left] [data-testid=response-text]")
    page.fill("textarea[name=critique]", "left is clearer")
    with page.expect_navigation():
        page.click("[data-testid=response-left] button")
    right = page.inner_text("[data-testid=response-right] [data-testid=response-text]")
    with page.expect_navigation():
        page.keyboard.press("2")
    with page.expect_navigation():
        page.keyboard.press("t")
    assert page.locator("[data-testid=done]").is_visible()
    got = _answers(store, me, ids["pairwise"])
    assert [a.resolved["winner"] for a in got] == [by_text[left], by_text[right], "tie"]
    assert got[0].critique == "left is clearer" and all(a.source == "web" for a in got)
    assert all(a.time_spent_ms is not None and a.time_spent_ms > 0 for a in got)

    # rating: keyboard "6" + Enter, then mouse on the scale and the submit button
    page.goto(f"{live_server.url}/campaigns/{ids['rating']}/task")
    page.keyboard.press("6")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.click("label.scale-opt:has-text('3')")
    with page.expect_navigation():
        page.click("button:has-text('Submit')")
    assert sorted(a.resolved["rating"] for a in _answers(store, me, ids["rating"])) == [3.0, 6.0]

    # ranking: click the cards in preference order (third, first, second), then submit
    page.goto(f"{live_server.url}/campaigns/{ids['ranking']}/task")
    shown = [int(v) for v in page.eval_on_selector_all("input[name=item]", "els => els.map(e => e.value)")]
    for index in (2, 0, 1):
        page.click(f"[data-testid=rank-item-{index}] [data-testid=response-text]")
    assert page.eval_on_selector_all("select[name=rank]", "els => els.map(e => e.value)") == ["2", "3", "1"]
    with page.expect_navigation():
        page.click("button:has-text('Submit ranking')")
    (ranking,) = _answers(store, me, ids["ranking"])
    assert ranking.resolved == {"order": [shown[2], shown[0], shown[1]]}

    # binary: keyboard "g", then a double click on "Bad" that must store one answer
    page.goto(f"{live_server.url}/campaigns/{ids['binary']}/task")
    with page.expect_navigation():
        page.keyboard.press("g")
    with page.expect_navigation():
        page.dblclick("button[value=bad]")
    labels = [a.resolved["label"] for a in _answers(store, me, ids["binary"])]
    assert labels == ["good", "bad"]
    with store.read_session() as s:
        tasks = s.scalars(select(Task).where(Task.campaign_id == ids["binary"])).all()
        assert len(tasks) == 2 and len(_answers(store, me, ids["binary"])) == 2
    page.close()


def test_admin_watches_progress_and_invites(live_server: Any, chromium: Any) -> None:
    world = _setup(live_server.url)
    ids = world["ids"]
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        auth = {"Authorization": f"Bearer {world['token']}"}
        view = client.get(f"/api/v1/campaigns/{ids['pairwise']}/next", headers=auth).json()
        client.post(f"/api/v1/assignments/{view['assignment_id']}/annotations", headers=auth,
                    json={"idempotency_key": "browser-admin-1", "answer": {"choice": "left"}, "time_spent_ms": 4200})
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/login")
    page.fill("#token", ADMIN["Authorization"][7:])
    with page.expect_navigation():
        page.click("button[type=submit]")
    with page.expect_navigation():
        page.click(f"[data-testid=campaign-link-{ids['pairwise']}]")
    table = page.inner_text("[data-testid=annotator-table]")
    assert "Browser Bob" in table and "4.2 s" in table
    page.fill("input[name=name]", "Carol")
    with page.expect_navigation():
        page.click("button:has-text('Invite')")
    token = page.inner_text("[data-testid=invite-token]").strip()
    if os.environ.get("RLHFKIT_SCREENSHOT_DIR"):
        page.screenshot(path=str(Path(os.environ["RLHFKIT_SCREENSHOT_DIR"]) / "admin_campaign.png"), full_page=True)
    me = httpx.get(f"{live_server.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["name"] == "Carol" and me["role"] == "annotator"
    page.close()
