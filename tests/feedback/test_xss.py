"""XSS: payloads in prompts, responses, campaign names and annotator names are shown as text, never run.

Two layers are checked separately: escaping (the DOM holds the payload as text, no element or event
handler was created, no CSP violation was even attempted) and the Content-Security-Policy header.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

PAYLOADS = [
    "<script>window.__xss=1</script>",
    "<img src=x onerror=\"window.__xss=2\">",
    "<svg onload=\"window.__xss=3\"></svg>",
    "\"><script>window.__xss=4</script>",
    "'><img src=x onerror=window.__xss=5>",
    "<iframe src=\"javascript:parent.__xss=6\"></iframe>",
    "<a href=\"javascript:window.__xss=7\">click me</a>",
    "<body onload=\"window.__xss=8\">",
    "<details open ontoggle=\"window.__xss=9\">x</details>",
    "<math><mtext><table><mglyph><style><img src=x onerror=window.__xss=10>",
    "{{ 7*7 }} {% raw %}{{ config }}",
    "<scr<script>ipt>window.__xss=12</scr</script>ipt>",
    "</textarea><script>window.__xss=13</script>",
    "</title><script>window.__xss=14</script>",
    "<input autofocus onfocus=\"window.__xss=15\">",
    "<video><source onerror=\"window.__xss=16\"></video>",
    "<object data=\"javascript:window.__xss=17\"></object>",
    "<meta http-equiv=\"refresh\" content=\"0;url=javascript:window.__xss=18\">",
    "<style>@import 'javascript:window.__xss=19';</style>",
    "<marquee onstart=\"window.__xss=20\">m</marquee>",
    "javascript:window.__xss=21",
    "&lt;script&gt;window.__xss=22&lt;/script&gt;",
    "<!--<img src=\"--><img src=x onerror=window.__xss=23//\">",
    "<form action=\"javascript:window.__xss=24\"><button>go</button></form>",
    "\u2028\u2029<script>window.__xss=25</script>",
    "<base href=\"http://evil.example/\">",
    "\" onmouseover=\"window.__xss=27\" x=\"",
    "<div style=\"background:url(javascript:window.__xss=28)\">d</div>",
]

DOM_CHECK = """() => {
  const handlers = [...document.querySelectorAll('*')].filter(
      el => [...el.attributes].some(a => a.name.startsWith('on')));
  return {
    xss: window.__xss === undefined ? null : window.__xss,
    csp: window.__csp || 0,
    scripts: [...document.scripts].map(s => s.getAttribute('src')),
    foreign: document.querySelectorAll('img,svg,iframe,object,embed,video,audio,marquee,details,math,base,style,meta[http-equiv],a[href^="javascript"],form[action^="javascript"]').length,
    handlers: handlers.map(el => el.outerHTML.slice(0, 80)),
    texts: [...document.querySelectorAll('.text')].map(el => ({children: el.children.length, text: el.textContent})),
    md: [...document.querySelectorAll('.md')].map(el => ({
      tags: [...el.querySelectorAll('*')].map(e => e.tagName.toLowerCase()),
      attrs: [...el.querySelectorAll('*')].flatMap(e => [...e.attributes].map(a => a.name)),
      text: el.textContent})),
  };
}"""
# Responses are shown as Markdown (server-side markdown-it + nh3): only these tags and attributes may appear.
MD_TAGS = {"p", "br", "hr", "em", "strong", "s", "code", "pre", "blockquote", "ul", "ol", "li", "a",
           "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td"}
MD_ATTRS = {"href", "title", "rel", "class", "start"}
MD_BLOCK = re.compile(r'<div class="md"[^>]*>(.*?)</div>', re.S)
INIT = "document.addEventListener('securitypolicyviolation', () => { window.__csp = (window.__csp || 0) + 1; });"


def _world(base_url: str, admin: dict[str, str], client: Any) -> dict[str, Any]:
    """One pairwise campaign per payload (name, prompt, responses), one annotator per payload, one reader."""
    campaigns = []
    for i, payload in enumerate(PAYLOADS):
        nxt = PAYLOADS[(i + 1) % len(PAYLOADS)]
        resp = client.post(f"{base_url}/api/v1/campaigns", headers=admin, json={
            "name": payload, "kind": "pairwise", "instructions": payload, "redundancy": 2,
            "samples": [{"prompt": payload, "response": payload}, {"prompt": payload, "response": nxt}]})
        assert resp.status_code == 201, resp.text
        campaigns.append(resp.json()["id"])
    annotators = []
    for payload in PAYLOADS:
        resp = client.post(f"{base_url}/api/v1/annotators", headers=admin, json={"name": payload, "campaign_ids": campaigns[:1]})
        annotators.append(resp.json())
    reader = client.post(f"{base_url}/api/v1/annotators", headers=admin, json={"name": "reader", "campaign_ids": campaigns}).json()
    first = annotators[0]
    view = client.get(f"{base_url}/api/v1/campaigns/{campaigns[0]}/next", headers={"Authorization": f"Bearer {first['token']}"}).json()
    client.post(f"{base_url}/api/v1/assignments/{view['assignment_id']}/annotations", headers={"Authorization": f"Bearer {first['token']}"},
                json={"idempotency_key": "xss-answer-1", "answer": {"choice": "left"}})
    return {"campaigns": campaigns, "annotators": annotators, "reader": reader}


def test_at_least_twenty_payloads() -> None:
    assert len(set(PAYLOADS)) >= 20


def test_payloads_are_escaped_in_server_html(sqlite_api: Any) -> None:
    """Fast check without a browser: every payload appears only in escaped form."""
    w = _world("", sqlite_api.admin(), sqlite_api.client)
    admin = TestClient(sqlite_api.client.app, base_url="http://testserver")
    admin.post("/login", data={"token": sqlite_api.admin()["Authorization"][7:],
                                "csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', admin.get("/login").text).group(1)})
    reader = TestClient(sqlite_api.client.app, base_url="http://testserver")
    reader.post("/login", data={"token": w["reader"]["token"],
                                 "csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', reader.get("/login").text).group(1)})
    pages = [admin.get("/admin").text, admin.get(f"/admin/campaigns/{w['campaigns'][0]}").text,
             admin.get(f"/admin/campaigns/{w['campaigns'][0]}/annotators/{w['annotators'][0]['id']}").text,
             reader.get("/tasks").text] + [reader.get(f"/campaigns/{cid}/task").text for cid in w["campaigns"]]
    joined = "\n".join(pages)
    outside_markdown = MD_BLOCK.sub("", joined)
    for block in MD_BLOCK.findall(joined):
        assert set(re.findall(r"<(\w+)", block)) <= MD_TAGS, block
        assert set(re.findall(r"\s([\w-]+)=", "".join(re.findall(r"<\w+[^>]*>", block)))) <= MD_ATTRS, block
    for payload in PAYLOADS:
        if "<" in payload:
            assert payload not in joined, f"raw payload in HTML: {payload!r}"
        if '"' in payload:  # inside Markdown text a quote is text (nh3 writes it bare); elsewhere it must be escaped
            assert payload not in outside_markdown, f"raw payload in HTML: {payload!r}"
        assert str(escape(payload)) in joined, f"escaped payload missing: {payload!r}"


@pytest.mark.browser
@pytest.mark.slow
def test_payloads_render_inert_in_chromium(live_server: Any, chromium: Any) -> None:
    admin_headers = {"Authorization": "Bearer admin-test-token-0123456789abcdef"}
    with httpx.Client(timeout=30) as client:
        w = _world(live_server.url, admin_headers, client)
    context = chromium.new_context()
    context.add_init_script(INIT)
    dialogs: list[str] = []
    page = context.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    def visit(url: str) -> dict[str, Any]:
        page.goto(url, wait_until="load")
        page.wait_for_timeout(50)
        state = page.evaluate(DOM_CHECK)
        assert state["xss"] is None and not dialogs, f"script ran on {url}: {state['xss']} {dialogs}"
        assert state["csp"] == 0, f"{url}: something tried to run inline code (escaping failed; only CSP stopped it)"
        assert state["scripts"] == ["/static/app.js"], state["scripts"]
        assert state["foreign"] == 0 and state["handlers"] == [], state
        for text in state["texts"]:
            assert text["children"] == 0
        return state

    def sign_in(token: str) -> None:
        page.goto(f"{live_server.url}/login")
        page.fill("#token", token)
        page.click("button[type=submit]")

    sign_in(admin_headers["Authorization"][7:])
    state = visit(f"{live_server.url}/admin")
    body = page.inner_text("main")
    names_shown = sum(payload.strip() in body for payload in PAYLOADS)
    assert names_shown >= len(PAYLOADS) - 2, "campaign names must be displayed as text"
    visit(f"{live_server.url}/admin/campaigns/{w['campaigns'][0]}")
    table = page.inner_text("[data-testid=annotator-table]")
    assert sum(payload.strip() in table for payload in PAYLOADS) >= len(PAYLOADS) - 2
    visit(f"{live_server.url}/admin/campaigns/{w['campaigns'][0]}/annotators/{w['annotators'][0]['id']}")
    context.clear_cookies()
    sign_in(w["reader"]["token"])
    visit(f"{live_server.url}/tasks")
    for i, cid in enumerate(w["campaigns"]):
        state = visit(f"{live_server.url}/campaigns/{cid}/task")
        texts = [t["text"] for t in state["texts"]]
        assert texts == [PAYLOADS[i]], "the prompt is shown verbatim"
        assert len(state["md"]) == 2, "both responses are shown as Markdown"
        for md in state["md"]:
            assert set(md["tags"]) <= MD_TAGS and set(md["attrs"]) <= MD_ATTRS, md
        shown = "".join(md["text"] for md in state["md"])
        for payload in (PAYLOADS[i], PAYLOADS[(i + 1) % len(PAYLOADS)]):
            assert all(marker in shown for marker in re.findall(r"__xss=\d+", payload)), "responses shown as text"
        if "\u2028" not in PAYLOADS[i]:
            assert page.title() == " ".join(f"{PAYLOADS[i]} · rlhfkit".split()), "the title shows the name as text"
    context.close()
