"""Edit tasks: the annotator rewrites a response; an edit becomes a preference pair and an SFT example."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from rlhfkit.cli import app as cli_app
from rlhfkit.data.records import record_from_dict
from rlhfkit.feedback import crud
from rlhfkit.feedback.annotators import TaskItem, TaskView, invite_panel, make_panel, run_panel
from rlhfkit.feedback.client import FeedbackClient
from rlhfkit.feedback.editors import AspectEditor, add_reason, make_positive, name_subject, tidy
from rlhfkit.feedback.edits import edit_records
from rlhfkit.feedback.rules import MAX_EDIT
from rlhfkit.feedback.store import open_store
from rlhfkit.tasks import get_task

from conftest import ADMIN_TOKEN, Api

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SAMPLES = [{"prompt": "Q: Why do bananas turn brown?\nA:", "response": "It is what it is."},
           {"prompt": "Review of the Nova keyboard:", "response": "It was <b>bad</b> & loud."}]


def _edit_campaign(api: Api, **extra: Any) -> tuple[int, str]:
    campaign = api.campaign(name="edits", kind="edit", samples=SAMPLES, **extra)
    assert campaign["n_tasks"] == 2 and campaign["kind"] == "edit"
    _, token = api.invite("editor", [campaign["id"]])
    return campaign["id"], token


def _export(api: Api, cid: int, **params: str) -> list[dict[str, Any]]:
    resp = api.client.get(f"/api/v1/campaigns/{cid}/export", params=params, headers=api.admin())
    assert resp.status_code == 200, resp.text
    return [json.loads(line) for line in resp.text.splitlines()]


def test_edit_round_trip_exports_pairs_and_sft(api: Api) -> None:
    """next -> submit a rewrite and a "no change needed" -> export as pairs (raw, aggregated) and as SFT."""
    cid, token = _edit_campaign(api)
    first = api.next(cid, token).json()
    assert first["kind"] == "edit" and len(first["items"]) == 1
    original = first["items"][0]["text"]
    rewrite = original.rstrip(".") + " because of the sugar and air."
    key = "edit-key-0001"
    stored = api.submit(first["assignment_id"], token, {"text": rewrite}, key=key)
    assert stored.status_code == 201, stored.text
    assert stored.json()["resolved"] == {"text": rewrite}
    replay = api.submit(first["assignment_id"], token, {"text": rewrite}, key=key)
    assert replay.status_code == 200 and replay.json()["replayed"]
    second = api.next(cid, token).json()
    assert api.submit(second["assignment_id"], token, {"unchanged": True}).status_code == 201
    assert api.next(cid, token).status_code == 204

    (pair,) = _export(api, cid)
    assert pair["kind"] == "pairwise" and pair["chosen"] == rewrite and pair["rejected"] == original
    assert pair["prompt"] == first["prompt"] and pair["annotator"] == "editor" and pair["tie"] is False
    record_from_dict(pair)
    assert _export(api, cid, aggregate="majority") == [dict(pair, timestamp=pair["timestamp"])]
    assert [r["chosen"] for r in _export(api, cid, aggregate="reliability")] == [rewrite]
    assert _export(api, cid, edits="sft") == [{"prompt": first["prompt"], "completion": rewrite}]
    assert api.client.get(f"/api/v1/campaigns/{cid}/export", params={"edits": "both"},
                          headers=api.admin()).status_code == 422
    progress = api.client.get(f"/api/v1/campaigns/{cid}/progress", headers=api.admin()).json()
    assert progress["complete"] == 2 and progress["annotations"] == 2


@pytest.mark.parametrize(("answer", "field", "words"), [
    ({"text": ""}, "answer.text", "empty"),
    ({"text": "   \n"}, "answer.text", "empty"),
    ({"text": "  {original}  \n"}, "answer.text", "identical"),
    ({"text": "bad\x00text"}, "answer.text", "NUL"),
    ({"text": "x" * (MAX_EDIT + 1)}, "answer.text", f"longer than {MAX_EDIT}"),
    ({"text": 5}, "answer.text", "must be a string"),
    ({"text": "fine", "extra": 1}, "answer:", "edit needs"),
    ({"choice": "left"}, "answer:", "edit needs"),
    ({"unchanged": False}, "answer:", "edit needs"),
])
def test_invalid_edits_are_refused_naming_the_field(sqlite_api: Api, answer: dict[str, Any], field: str,
                                                     words: str) -> None:
    """422 with the field and the reason; the assignment stays open for a corrected answer."""
    cid, token = _edit_campaign(sqlite_api)
    view = sqlite_api.next(cid, token).json()
    if answer.get("text") == "  {original}  \n":
        answer = {"text": f"  {view['items'][0]['text']}  \n"}
    resp = sqlite_api.submit(view["assignment_id"], token, answer)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"].startswith(field) and words in resp.json()["detail"]
    assert sqlite_api.submit(view["assignment_id"], token, {"text": "A better answer."}).status_code == 201


def test_edit_tasks_take_no_gold(sqlite_api: Api) -> None:
    """A gold answer on an edit task is refused, naming the task's gold field."""
    campaign = sqlite_api.campaign(name="edits", kind="edit", samples=SAMPLES)
    ids = [s["id"] for s in sqlite_api.client.get(f"/api/v1/campaigns/{campaign['id']}/samples",
                                                   headers=sqlite_api.admin()).json()]
    resp = sqlite_api.client.post(f"/api/v1/campaigns/{campaign['id']}/tasks", headers=sqlite_api.admin(),
                                  json={"tasks": [{"sample_ids": ids[:1], "gold": {"text": "x"}}]})
    assert resp.status_code == 422 and "tasks[0]: edit tasks take no gold" in resp.json()["detail"]


def _signed_in(api: Api, token: str) -> TestClient:
    client = TestClient(api.client.app, base_url="http://testserver", follow_redirects=False)
    csrf = CSRF.search(client.get("/login").text).group(1)  # type: ignore[union-attr]
    assert client.post("/login", data={"token": token, "csrf_token": csrf}).status_code == 303
    return client


def test_edit_page_prefills_escapes_and_submits(sqlite_api: Api) -> None:
    """The page shows the original and a prefilled textarea (escaped), loads the diff script under the
    strict CSP, refuses an unchanged text with the rule's message and stores a rewrite from the form."""
    cid, token = _edit_campaign(sqlite_api)
    client = _signed_in(sqlite_api, token)
    page = client.get(f"/campaigns/{cid}/task")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert '<script src="/static/diff.js" defer></script>' in html and "<script>" not in html
    assert "<b>bad</b>" not in html
    aid = int(re.search(r'action="/assignments/(\d+)/answer"', html).group(1))  # type: ignore[union-attr]
    csrf = CSRF.search(html).group(1)  # type: ignore[union-attr]
    original = next(s["response"] for s in SAMPLES if _escape(s["prompt"]) in html)
    assert f'data-testid="edit-text">\n{_escape(original)}</textarea>' in html
    form = {"csrf_token": csrf, "idempotency_key": "web-edit-0001", "time_spent_ms": "1200"}
    same = client.post(f"/assignments/{aid}/answer", data={**form, "edit_text": original.replace("\n", "\r\n")})
    assert same.status_code == 422 and "answer.text: identical to the response" in same.text
    empty = client.post(f"/assignments/{aid}/answer", data={**form, "edit_text": " \t "})
    assert empty.status_code == 422 and 'data-testid="edit-text">\n \t </textarea>' in empty.text, "the draft is kept"
    done = client.post(f"/assignments/{aid}/answer", data={**form, "idempotency_key": "web-edit-0002",
                                                         "edit_text": "Bananas brown\r\nbecause of enzymes and air."})
    assert done.status_code == 303
    rows = _export(sqlite_api, cid)
    assert rows[0]["chosen"] == "Bananas brown\nbecause of enzymes and air." and rows[0]["rejected"] == original
    script = client.get("/static/diff.js")
    assert script.status_code == 200 and ".innerHTML" not in script.text and "textContent" in script.text


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;").replace("'", "&#39;")


def test_cli_exports_edits_as_pairs_or_sft(tmp_path: Path) -> None:
    """`rlhfkit export --edits pairs|sft` on a store with one rewrite."""
    db = f"sqlite:///{tmp_path / 'f.db'}"
    store = open_store(db)
    with store.session() as s:
        campaign = crud.create_campaign(s, name="e", kind="edit", samples=[crud.SampleSpec(prompt="p", response="r.")])
        annotator, _ = crud.create_annotator(s, name="ann", campaign_ids=[campaign.id])
        assignment = crud.next_assignment(s, campaign=campaign, annotator_id=annotator.id)
        crud.submit_annotation(s, assignment=assignment, idempotency_key="k" * 8, answer={"text": "better r."})
        cid = campaign.id
    store.close()
    runner = CliRunner()
    common = ["--campaign", str(cid), "--db", db, "--state-dir", str(tmp_path / "state")]
    for form, expected in (("pairs", {"kind": "pairwise", "chosen": "better r.", "rejected": "r."}),
                           ("sft", {"prompt": "p", "completion": "better r."})):
        out = tmp_path / f"{form}.jsonl"
        res = runner.invoke(cli_app, ["export", "--out", str(out), "--edits", form, *common])
        assert res.exit_code == 0, res.output
        (record,) = [json.loads(line) for line in out.read_text().splitlines()]
        assert expected.items() <= record.items()
    res = runner.invoke(cli_app, ["export", "--out", str(tmp_path / "x.jsonl"), "--edits", "sft", "--critiques", "rules", *common])
    assert res.exit_code != 0 and "--edits sft" in res.output


def test_aspect_editor_raises_the_gold() -> None:
    """On poor answers of the explain and sentiment tasks, the noisy editor's rewrites score higher."""
    rng = np.random.default_rng(0)
    poor = {"explain": ["It is what it is.", "Good question. I do not know. I do not know.", "Science."],
            "sentiment": ["It was bad.", "Not good, the staff was rude.", "What a great find."]}
    for name, responses in poor.items():
        task = get_task(name)
        editor = AspectEditor.for_task(task, noise=0.1)
        prompts = task.prompts(12, seed=3)
        originals = [responses[i % len(responses)] for i in range(len(prompts))]
        edited = [editor(p, r, rng) or r for p, r in zip(prompts, originals)]
        before, after = task.gold_reward(prompts, originals), task.gold_reward(prompts, edited)
        assert before is not None and after is not None
        assert np.mean(after) > np.mean(before) + 0.3, (name, np.mean(before), np.mean(after))
        assert sum(a > b for a, b in zip(after, before)) >= 10
    assert editor("Review of the Nova keyboard:", "The Nova keyboard is lovely because the keys are quiet and firm.",
                  rng) is None, "nothing to fix: no change needed"


def test_fixes_and_panel_members() -> None:
    """Each fix does what its aspect asks; spammers answer "no change needed"; a member without an editor fails."""
    assert name_subject("Review of the Nova keyboard:", "It types well.") == "The Nova keyboard types well."
    assert "because of the bananas and" in (add_reason("Q: Why do bananas turn brown?\nA:", "They just do.") or "")
    assert tidy("p", "good good food. good good food") == "good food."
    assert make_positive("p", "Not good, the staff was rude.") == "Good, the staff was excellent."
    task = get_task("explain")
    view = TaskView(key="t1", kind="edit", prompt=task.prompts(1)[0], items=(TaskItem(1, "It is."),))
    members = make_panel(task.utility, 3, spammer_fraction=1 / 3, editor=AspectEditor.for_task(task), seed=1)
    answers = {m.name: m.decide(view) for m in members}
    assert all(a == {"unchanged": True} for n, a in answers.items() if n.endswith("-spam"))
    assert all(set(a) == {"text"} for n, a in answers.items() if not n.endswith("-spam"))
    with pytest.raises(ValueError, match="editor"):
        make_panel(task.utility, 1)[0].decide(view)


def test_make_positive_raises_lukewarm_reviews_not_only_negative_ones() -> None:
    """Lukewarm words rise to a strong word of their scale, negative verbs to loving ones, and a review with
    no opinion left lukewarm gets a strong closer of the corpus; a clearly positive review is left alone."""
    from rlhfkit.models.corpus import lexicon, sentiment_score, strong_alternatives, strong_closers

    weights = lexicon().weights
    for word, alternatives in strong_alternatives().items():
        assert weights[word] <= 0 and alternatives and all(weights[a] >= 1.0 for a in alternatives), word
    assert make_positive("p", "It was fine.") == "It was superb."
    assert make_positive("p", "I hated the movie.") in {"I loved the movie.", "I adored the movie."}
    lukewarm = "I expected more from this place."
    raised = make_positive("p", lukewarm)
    assert raised is not None and raised.startswith(lukewarm + " ") and raised[len(lukewarm) + 1:] in strong_closers()
    assert sentiment_score(raised) >= 0.25 > sentiment_score(lukewarm)
    clear = "The Nova keyboard is lovely because the keys are quiet and firm."
    assert make_positive("p", clear) == clear
    assert make_positive("p", "Not. Never.") is None


def test_make_positive_keeps_capitals_and_cuts_complaints_no_word_swap_turns_around() -> None:
    """A sentence keeps its capital when its first word is swapped or a leading negation dropped, and a negative
    sentence whose complaint has no strong word to rise to ("Avoid this book.") is cut, not turned into word
    salad ("lovely this book."); on 400 corpus reviews of every sentiment level, each rewrite reads clearly
    positive with every sentence capitalized, and only reviews made of such complaints are left with nothing."""
    from rlhfkit.feedback.editors import _SENTENCES, unraisable_negative_words
    from rlhfkit.models.corpus import CLEARLY_POSITIVE_POLARITY, generate_reviews, sentiment_score

    assert make_positive("p", "Not great. I like the jokes.") == "Great. I like the jokes."
    assert make_positive("p", "Awful. It was fine.") == "Superb. It was superb."
    kept = "The plot is flat because nothing happens. Avoid this book."
    assert make_positive("p", kept).startswith("The plot is superb because nothing happens.")
    assert "avoid" not in make_positive("p", kept).lower()
    assert unraisable_negative_words("Sadly, the worst bag.") == ["sadly", "worst"]
    praise = "I was not disappointed, the food was good."
    assert make_positive("p", praise) == praise
    assert make_positive("p", "Sadly, this place was not for me.") is None
    for review in generate_reviews(400, seed=3):
        rewrite = make_positive(review.prompt, review.completion)
        if rewrite is None:
            assert all(unraisable_negative_words(s) for s in _SENTENCES.findall(review.completion) if s.strip())
            continue
        assert sentiment_score(rewrite) >= CLEARLY_POSITIVE_POLARITY, (review.completion, rewrite)
        assert all(s.strip()[:1].isupper() for s in _SENTENCES.findall(rewrite) if s.strip()), (review.completion,
                                                                                               rewrite)


def test_simulated_panel_edits_through_the_api_and_pairs_favour_the_gold(sqlite_api: Api) -> None:
    """A panel with an editor answers an edit campaign over HTTP; the exported pairs prefer higher gold."""
    task = get_task("explain")
    prompts = task.prompts(6, seed=5)
    samples = [{"prompt": p, "response": "It just happens that way, I think."} for p in prompts]
    cid = sqlite_api.campaign(name="panel edits", kind="edit", samples=samples, redundancy=2)["id"]
    def forward(request: httpx.Request) -> httpx.Response:
        reply = sqlite_api.client.request(request.method, request.url.raw_path.decode(), content=request.content,
                                          headers=dict(request.headers))
        return httpx.Response(reply.status_code, headers=reply.headers, content=reply.content)

    admin = FeedbackClient("http://testserver", ADMIN_TOKEN, transport=httpx.MockTransport(forward))
    members = make_panel(task.utility, 2, editor=AspectEditor.for_task(task, noise=0.1), seed=7)
    clients = invite_panel(admin, members, [cid], workers=1)
    done = run_panel(clients, members, cid, sequential=True)
    assert sum(len(v) for v in done.values()) == 12
    rows = admin.annotations(cid)
    pairs = edit_records(rows)
    assert len(pairs) >= 10 and edit_records(rows, form="sft")[0]["completion"] == pairs[0]["chosen"]
    chosen = task.gold_reward([r["prompt"] for r in pairs], [r["chosen"] for r in pairs])
    rejected = task.gold_reward([r["prompt"] for r in pairs], [r["rejected"] for r in pairs])
    assert chosen is not None and rejected is not None
    assert np.mean(chosen) > np.mean(rejected) + 0.3
    assert admin.export(cid, edits="sft")[0]["completion"] == pairs[0]["chosen"]


def test_quality_report_counts_edits_beside_the_other_kinds() -> None:
    """Edit rows neither break the quality report nor enter Dawid-Skene: they are counted per annotator."""
    from rlhfkit.feedback.aggregate import quality_report

    rows = [{"annotation_id": i, "task_id": i, "kind": "edit", "annotator": "a", "prompt": "p", "is_gold": False,
             "samples": [{"id": i, "text": "r."}], "resolved": resolved, "submitted_at": "2026-01-01T00:00:00"}
            for i, resolved in enumerate([{"text": "better."}, {"unchanged": True}, {"skip": True}], start=1)]
    assert quality_report(rows) == {"edit": {"tasks": 2, "annotations": 2, "krippendorff_alpha": None,
                                             "annotators": {"a": {"edits": 1, "unchanged": 1}}}}
    assert edit_records(rows) == [{"kind": "pairwise", "prompt": "p", "chosen": "better.", "rejected": "r.",
                                   "margin": None, "tie": False, "annotator": "a",
                                   "timestamp": "2026-01-01T00:00:00", "weight": 1.0}]
