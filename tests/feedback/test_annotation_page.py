"""The annotation page for chat data: strength of preference, safe Markdown, conversation turns, progress."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from rlhfkit.feedback import crud
from rlhfkit.feedback.models import Annotation
from rlhfkit.feedback.rules import InvalidError, resolve_answer
from rlhfkit.feedback.server.web.markdown import markdown_html
from tests.feedback.test_xss import PAYLOADS

MD_PAYLOADS = [
    "[x](javascript:window.__xss=101)",
    "[x](JaVaScRiPt:window.__xss=102)",
    "[x]( javascript:window.__xss=103)",
    "[x](data:text/html,<script>window.__xss=104</script>)",
    "<javascript:window.__xss=105>",
    "![i](http://evil.example/x.png)",
    "![i](javascript:window.__xss=107)",
    "<script>window.__xss=108</script>",
    "<img src=x onerror=\"window.__xss=109\">",
    "&lt;script&gt;window.__xss=110&lt;/script&gt;",
    "&#60;img src=x onerror=window.__xss=111&#62;",
    "[ref]\n\n[ref]: javascript:window.__xss=112",
    "```html\n<script>window.__xss=113</script>\n```",
    "[x](http://ok.example/\" onmouseover=\"window.__xss=114)",
    "<a href=\"javascript:window.__xss=115\">a</a>",
    "| a |\n|---|\n| <img src=x onerror=window.__xss=116> |",
]
ALLOWED = {"p": set(), "br": set(), "hr": set(), "em": set(), "strong": set(), "s": set(), "code": {"class"},
           "pre": set(), "blockquote": set(), "ul": set(), "ol": {"start"}, "li": set(), "a": {"href", "title", "rel"},
           "table": set(), "thead": set(), "tbody": set(), "tr": set(), "th": set(), "td": set(),
           **{f"h{i}": set() for i in range(1, 7)}}


class _Tags(HTMLParser):
    """Every start tag with its attributes (an independent parse of the rendered HTML)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Any]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))


def _tags(html: str) -> list[tuple[str, dict[str, str]]]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


@pytest.mark.parametrize("payload", PAYLOADS + MD_PAYLOADS)
def test_markdown_output_holds_only_allowlisted_tags_and_http_links(payload: str) -> None:
    for tag, attrs in _tags(str(markdown_html(payload))):
        assert tag in ALLOWED and set(attrs) <= ALLOWED[tag], (payload, tag, attrs)
        if tag == "a":
            assert re.match(r"https?://", attrs["href"]) and attrs["rel"] == "nofollow noopener noreferrer"


def test_markdown_renders_code_lists_and_links_and_keeps_code_whitespace() -> None:
    html = str(markdown_html("Use:\n\n```python\ndef f(x):\n    return  x\n```\n\n- one\n- two\n\n"
                             "See <https://docs.example/a> and [b](http://b.example/).\n\n![pic](https://x.example/p.png)"))
    assert '<pre><code class="language-python">def f(x):\n    return  x\n</code></pre>' in html
    assert "<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in html
    assert [a["href"] for t, a in _tags(html) if t == "a"] == ["https://docs.example/a", "http://b.example/",
                                                              "https://x.example/p.png"]
    assert "<img" not in html, "images are never loaded; the alt text becomes a plain link"
    assert [t for t, _ in _tags(str(markdown_html("[rel](/admin) [mail](mailto:a@b.c)")))] == ["p"]


def test_strength_maps_to_the_bradley_terry_margin_with_the_same_rules_everywhere() -> None:
    def resolve(answer: dict[str, Any]) -> dict[str, Any]:
        return resolve_answer(kind="pairwise", answer=answer, displayed=[7, 9], scale=None)

    assert resolve({"choice": "right", "strength": "slightly"}) == {"winner": 9, "margin": pytest.approx(1 / 3)}
    assert resolve({"choice": "left", "strength": "clearly"}) == {"winner": 7, "margin": pytest.approx(2 / 3)}
    assert resolve({"choice": "left", "strength": "much"}) == {"winner": 7, "margin": 1.0}
    assert resolve({"choice": "left"}) == {"winner": 7, "margin": None}, "no strength given = no margin"
    assert resolve({"choice": "left", "strength": None}) == {"winner": 7, "margin": None}
    for bad, message in (({"choice": "left", "strength": "hugely"}, "answer.strength: must be one of"),
                         ({"choice": "left", "strength": "much", "margin": 1.0}, "strength or a margin, not both"),
                         ({"choice": "tie", "strength": "much"}, "a tie has no strength")):
        with pytest.raises(InvalidError, match=message):
            resolve(bad)


def test_samples_jsonl_keeps_conversation_turns_in_meta() -> None:
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <b>there</b>"}]
    lines = [json.dumps({"prompt": turns, "response": "Hello"}), json.dumps({"messages": turns, "response": "Hey"}),
             json.dumps({"prompt": "plain", "response": "x"})]
    specs = crud.parse_samples_jsonl("\n".join(lines), source="s.jsonl")
    assert specs[0].prompt == specs[1].prompt == "system: Be brief.\nuser: Hi <b>there</b>\n"
    assert specs[0].meta == specs[1].meta == {"prompt_messages": turns}
    assert specs[2].prompt == "plain" and specs[2].meta == {}
    with pytest.raises(InvalidError, match=r"s.jsonl:1: field 'prompt': messages\[0\]"):
        crud.parse_samples_jsonl(json.dumps({"prompt": [{"role": "user", "content": 3}], "response": "x"}), source="s.jsonl")


def _sign_in(api: Any, token: str) -> TestClient:
    web = TestClient(api.client.app, base_url="http://testserver")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', web.get("/login").text).group(1)
    assert web.post("/login", data={"token": token, "csrf_token": csrf}).status_code in (200, 303)
    return web


def _form(html: str) -> dict[str, str]:
    return {name: re.search(rf'name="{name}" value="([^"]*)"', html).group(1) for name in ("csrf_token", "idempotency_key")}


def _progress(html: str) -> tuple[int, int]:
    match = re.search(r'data-testid="progress".*?</progress> (\d+) of (\d+)</span>', html)
    assert match, "the progress line is on the task page"
    return int(match.group(1)), int(match.group(2))


def _answer_url(page: str) -> str:
    return re.search(r'action="(/assignments/\d+/answer)"', page).group(1)


def _resolved(api: Any, cid: int) -> list[dict[str, Any]]:
    with api.store.read_session() as s:
        return [a.resolved for a in s.scalars(select(Annotation).where(Annotation.campaign_id == cid).order_by(Annotation.id))]


def test_web_shows_conversation_turns_and_markdown_and_stores_the_strength(api: Any) -> None:
    turns = [{"role": "user", "content": "Write `f`"}, {"role": "assistant", "content": "Which **language**?"},
             {"role": "user", "content": "Python <script>window.__xss=1</script>"}]
    text = "".join(f"{t['role']}: {t['content']}\n" for t in turns)
    c = api.campaign(name="chat", kind="pairwise", gold_rate=0.0, samples=[
        {"prompt": text, "response": "```python\ndef f():\n    pass\n```", "meta": {"prompt_messages": turns}},
        {"prompt": text, "response": "- a\n- [b](javascript:alert(1))", "meta": {"prompt_messages": turns}}])
    _, ann = api.invite("ann", [c["id"]])
    web = _sign_in(api, ann)
    page = web.get(f"/campaigns/{c['id']}/task").text
    assert re.findall(r'<div class="role">(\w+)</div>', page) == ["user", "assistant", "user"]
    assert "<code>f</code>" in page and "<strong>language</strong>" in page
    assert "<script>window.__xss" not in page and "&lt;script&gt;window.__xss=1" in page
    assert "def f():\n    pass\n</code></pre>" in page and "<li>a</li>" in page and 'href="javascript' not in page
    assert [re.search(r'value="(\w+)"', m).group(1) for m in re.findall(r'<input type="radio" name="strength"[^>]*>', page)] \
        == ["slightly", "clearly", "much"]
    resp = web.post(_answer_url(page), data={**_form(page), "choice": "left", "strength": "clearly"}, follow_redirects=False)
    assert resp.status_code == 303, resp.text
    (resolved,) = _resolved(api, c["id"])
    assert resolved["margin"] == pytest.approx(2 / 3)
    (record,) = [json.loads(line) for line in api.client.get(f"/api/v1/campaigns/{c['id']}/export",
                                                             headers=api.admin()).text.splitlines()]
    assert record["margin"] == pytest.approx(2 / 3) and not record["tie"]


def test_web_progress_counts_this_annotators_tasks_and_strength_errors_show(api: Any) -> None:
    c = api.campaign(name="plain", kind="pairwise", gold_rate=0.0, redundancy=1,
                     samples=[{"prompt": f"plain {p}", "response": f"r{p}.{r}"} for p in range(4) for r in range(2)])
    assert api.client.get(f"/api/v1/campaigns/{c['id']}/progress", headers=api.admin()).json()["tasks"] == 4
    _, ann = api.invite("ann", [c["id"]])
    _, other = api.invite("other", [c["id"]])
    web = _sign_in(api, ann)
    page = web.get(f"/campaigns/{c['id']}/task").text
    assert _progress(page) == (0, 4) and 'data-testid="prompt-text"' in page
    resp = web.post(_answer_url(page), data={**_form(page), "choice": "left", "strength": "hugely"}, follow_redirects=False)
    assert resp.status_code == 422 and "answer.strength: must be one of" in resp.text and _progress(resp.text) == (0, 4)
    resp = web.post(_answer_url(page), data={**_form(page), "choice": "tie", "strength": "much"}, follow_redirects=False)
    assert resp.status_code == 303, resp.text
    assert _progress(web.get(f"/campaigns/{c['id']}/task").text) == (1, 4)
    view = api.next(c["id"], other).json()
    assert api.submit(view["assignment_id"], other, {"choice": "right", "strength": "much"}).status_code == 201
    assert _progress(web.get(f"/campaigns/{c['id']}/task").text) == (1, 3), \
        "a task answered by someone else (redundancy 1) is no longer ahead of this annotator"
    assert [r["margin"] for r in _resolved(api, c["id"])] == [None, 1.0], "the page drops a strength given with a tie"
    view = api.next(c["id"], other).json()
    resp = api.submit(view["assignment_id"], other, {"choice": "left", "strength": "much", "margin": 2.0})
    assert resp.status_code == 422 and "not both" in resp.text
