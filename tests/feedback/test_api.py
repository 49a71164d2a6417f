"""JSON API rules on SQLite and PostgreSQL: task building, answers per kind, assignment, gold, idempotency, export."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select

from rlhfkit.feedback import crud
from rlhfkit.feedback.models import Annotation, Assignment



def _count(api: Any, model) -> int:
    with api.store.read_session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_campaign_builds_tasks_per_kind(api: Any) -> None:
    samples = [{"prompt": f"p{p}", "response": f"r{p}.{r}"} for p in range(2) for r in range(5)]
    assert api.campaign(kind="pairwise", samples=samples)["n_tasks"] == 2 * 10
    assert api.campaign(kind="ranking", rank_k=2, samples=samples)["n_tasks"] == 2 * 2  # groups [2, 2], last single dropped
    assert api.campaign(kind="ranking", rank_k=3, samples=samples)["n_tasks"] == 2 * 2  # groups [3, 2]
    assert api.campaign(kind="rating", samples=samples)["n_tasks"] == 10
    summary = api.campaign(kind="binary", samples=samples, build_tasks=False)
    assert summary["n_tasks"] == 0 and summary["n_samples"] == 10
    bad = api.client.post("/api/v1/campaigns", json={"name": "x", "kind": "essay"}, headers=api.admin())
    assert bad.status_code == 422 and "unknown task kind" in bad.json()["detail"]
    bad = api.client.post("/api/v1/campaigns", json={"name": "x", "kind": "rating", "scale": [5, 1]}, headers=api.admin())
    assert bad.status_code == 422 and "scale" in bad.json()["detail"]


def test_answers_of_every_kind_resolve_and_export_in_record_format(api: Any) -> None:
    base = [{"prompt": "P", "response": t, "model": "m1", "round": 1} for t in ("alpha", "beta", "gamma")]
    kinds = {
        "pairwise": (dict(kind="pairwise", samples=base[:2]), lambda v: {"choice": "right"}),
        "rating": (dict(kind="rating", scale=[1, 7], samples=base[:1]), lambda v: {"rating": 6}),
        "ranking": (dict(kind="ranking", rank_k=3, samples=base), lambda v: {"order": [i["sample_id"] for i in reversed(v["items"])]}),
        "binary": (dict(kind="binary", samples=base[:1]), lambda v: {"label": "bad"}),
    }
    for kind, (body, make_answer) in kinds.items():
        c = api.campaign(name=f"c-{kind}", allow_critique=True, **body)
        _, token = api.invite(f"ann-{kind}", [c["id"]])
        view = api.next(c["id"], token).json()
        assert view["kind"] == kind and view["prompt"] == "P" and "is_gold" not in view
        resp = api.submit(view["assignment_id"], token, make_answer(view), critique="fine", time_spent_ms=1234)
        assert resp.status_code == 201, resp.text
        resolved = resp.json()["resolved"]
        records = [__import__("json").loads(line) for line in
                   api.client.get(f"/api/v1/campaigns/{c['id']}/export", headers=api.admin()).text.splitlines()]
        assert len(records) == 1
        rec = records[0]
        assert rec["kind"] == {"binary": "label"}.get(kind, kind) and rec["prompt"] == "P"
        assert rec["annotator"] == f"ann-{kind}" and rec["weight"] == 1.0 and rec["timestamp"]
        texts = {i["sample_id"]: i["text"] for i in view["items"]}
        if kind == "pairwise":
            right = view["items"][1]
            assert resolved == {"winner": right["sample_id"], "margin": None}
            assert rec["chosen"] == right["text"] and rec["rejected"] == view["items"][0]["text"] and rec["tie"] is False
        elif kind == "rating":
            assert rec["rating"] == 6.0 and rec["scale"] == [1.0, 7.0] and rec["response"] == "alpha"
        elif kind == "ranking":
            order = [i["sample_id"] for i in reversed(view["items"])]
            assert resolved == {"order": order}
            canonical = ["alpha", "beta", "gamma"]
            assert rec["responses"] == canonical
            assert [rec["ranks"][canonical.index(texts[sid])] for sid in order] == [1, 2, 3]
        else:
            assert rec["label"] is False and rec["response"] == "alpha"
        rows = api.client.get(f"/api/v1/campaigns/{c['id']}/annotations", headers=api.admin()).json()
        assert rows[0]["critique"] == "fine" and rows[0]["time_spent_ms"] == 1234
        assert rows[0]["displayed"] == [i["sample_id"] for i in view["items"]]


@pytest.mark.parametrize("answer, message", [
    ({"choice": "middle"}, "choice"), ({"choice": "left", "margin": -1}, "margin"), ({"rating": 3}, "choice"),
])
def test_invalid_pairwise_answers_are_rejected_without_a_row(api: Any, answer: dict, message: str) -> None:
    c = api.campaign(samples=[{"prompt": "p", "response": "a"}, {"prompt": "p", "response": "b"}])
    _, token = api.invite("a", [c["id"]])
    aid = api.next(c["id"], token).json()["assignment_id"]
    resp = api.submit(aid, token, answer)
    assert resp.status_code == 422 and message in resp.json()["detail"]
    assert _count(api, Annotation) == 0
    assert api.submit(aid, token, {"choice": "tie"}).json()["resolved"] == {"winner": "tie", "margin": None}


def test_rating_ranking_binary_validation(api: Any) -> None:
    samples = [{"prompt": "p", "response": t} for t in "abc"]
    rating = api.campaign(kind="rating", scale=[1, 5], samples=samples[:1])
    ranking = api.campaign(kind="ranking", rank_k=3, samples=samples)
    binary = api.campaign(kind="binary", samples=samples[:1])
    _, token = api.invite("a", [rating["id"], ranking["id"], binary["id"]])
    aid = api.next(rating["id"], token).json()["assignment_id"]
    assert "outside the scale" in api.submit(aid, token, {"rating": 9}).json()["detail"]
    assert api.submit(aid, token, {"rating": True}).status_code == 422
    assert api.submit(aid, token, {"rating": 2}, critique="no").status_code == 422  # critique not allowed here
    view = api.next(ranking["id"], token).json()
    ids = [i["sample_id"] for i in view["items"]]
    assert "permutation" in api.submit(view["assignment_id"], token, {"order": ids[:2]}).json()["detail"]
    assert api.submit(view["assignment_id"], token, {"order": [ids[0], ids[0], ids[1]]}).status_code == 422
    aid = api.next(binary["id"], token).json()["assignment_id"]
    assert api.submit(aid, token, {"label": "meh"}).status_code == 422
    assert api.submit(aid, token, {"label": "good"}, key="short").status_code == 422
    assert _count(api, Annotation) == 0


def test_k_annotators_per_task_and_never_the_same_task_twice(api: Any) -> None:
    c = api.campaign(redundancy=2, samples=[{"prompt": "p", "response": "a"}, {"prompt": "p", "response": "b"},
                                            {"prompt": "q", "response": "c"}, {"prompt": "q", "response": "d"}])
    tokens = [api.invite(f"a{i}", [c["id"]])[1] for i in range(3)]
    seen: dict[int, list[int]] = {}
    for token in tokens[:2]:
        seen[token] = []
        for _ in range(2):
            view = api.next(c["id"], token).json()
            again = api.next(c["id"], token).json()
            assert again["assignment_id"] == view["assignment_id"], "an open assignment is served again until answered"
            assert api.submit(view["assignment_id"], token, {"choice": "left"}).status_code == 201
            seen[token].append(view["task_id"])
        assert len(set(seen[token])) == 2
        assert api.next(c["id"], token).status_code == 204
    assert api.next(c["id"], tokens[2]).status_code == 204, "both tasks already have k=2 answers"
    progress = api.client.get(f"/api/v1/campaigns/{c['id']}/progress", headers=api.admin()).json()
    assert progress["complete"] == 2 and progress["annotations"] == 4
    with api.store.session() as s:
        pairs = s.execute(select(Assignment.task_id, Assignment.annotator_id)).all()
        assert len(pairs) == len(set(pairs)) == 4


def test_skip_frees_the_slot_and_expired_assignments_stop_holding_it(api: Any) -> None:
    c = api.campaign(redundancy=1, samples=[{"prompt": "p", "response": "a"}, {"prompt": "p", "response": "b"}])
    _, t1 = api.invite("a1", [c["id"]])
    _, t2 = api.invite("a2", [c["id"]])
    _, t3 = api.invite("a3", [c["id"]])
    first = api.next(c["id"], t1).json()
    assert api.next(c["id"], t2).status_code == 204, "the only slot is held by a1's open assignment"
    assert api.submit(first["assignment_id"], t1, {"choice": "skip"}).json()["resolved"] == {"skip": True}
    assert api.next(c["id"], t1).status_code == 204, "the skipper never gets the task again"
    held = api.next(c["id"], t2).json()
    assert held["task_id"] == first["task_id"]
    with api.store.session() as s:
        campaign = crud.get_campaign_for(s, campaign_id=c["id"], principal=crud.Principal(role="admin"))
        annotator = crud.authenticate(s, token=t3)
        assert crud.next_assignment(s, campaign=campaign, annotator_id=annotator.annotator_id, timeout_s=1800) is None
        expired = crud.next_assignment(s, campaign=campaign, annotator_id=annotator.annotator_id, timeout_s=1e-6)
        assert expired is not None and expired.task_id == first["task_id"]


@pytest.mark.slow
def test_positions_are_randomized_and_recorded(api: Any) -> None:
    c = api.campaign(redundancy=30, samples=[{"prompt": "p", "response": "a"}, {"prompt": "p", "response": "b"}])
    orders = Counter()
    for i in range(30):
        _, token = api.invite(f"a{i}", [c["id"]])
        view = api.next(c["id"], token).json()
        left = view["items"][0]["sample_id"]
        orders[left] += 1
        resolved = api.submit(view["assignment_id"], token, {"choice": "left"}).json()["resolved"]
        assert resolved["winner"] == left, "'left' means the sample displayed on the left to this annotator"
    assert len(orders) == 2 and min(orders.values()) >= 4, orders  # P(fail) < 1e-5 for a fair shuffle
    with api.store.session() as s:
        displayed = s.scalars(select(Assignment.displayed)).all()
        assert Counter(d[0] for d in displayed) == orders


def test_gold_tasks_go_to_everyone_and_measure_accuracy(api: Any) -> None:
    c = api.campaign(redundancy=1, gold_rate=0.5, samples=[{"prompt": "p", "response": t} for t in ("good", "bad")],
                     build_tasks=False)
    samples = api.client.get(f"/api/v1/campaigns/{c['id']}/samples", headers=api.admin()).json()
    ids = {s["response"]: s["id"] for s in samples}
    resp = api.client.post(f"/api/v1/campaigns/{c['id']}/tasks", headers=api.admin(), json={"tasks": [
        {"sample_ids": [ids["good"], ids["bad"]], "gold": {"winner": ids["good"]}},
        {"sample_ids": [ids["bad"]], "kind": "binary", "gold": {"label": "bad"}},
        {"sample_ids": [ids["bad"]], "kind": "rating", "scale": [1, 10], "gold": {"rating": 2, "tolerance": 1}},
        {"sample_ids": [ids["good"], ids["bad"]]},
    ]})
    assert resp.status_code == 201, resp.text
    bad_gold = api.client.post(f"/api/v1/campaigns/{c['id']}/tasks", headers=api.admin(),
                               json={"tasks": [{"sample_ids": [ids["good"], ids["bad"]], "gold": {"winner": 999}}]})
    assert bad_gold.status_code == 422 and "gold.winner" in bad_gold.json()["detail"]
    annotators = {name: api.invite(name, [c["id"]]) for name in ("careful", "sloppy")}
    for name, (_, token) in annotators.items():
        served = 0
        while (resp := api.next(c["id"], token)).status_code == 200:
            view = resp.json()
            texts = {i["position"]: i["text"] for i in view["items"]}
            right = name == "careful"
            if view["kind"] == "pairwise":
                good_side = "left" if texts.get("left") == "good" else "right"
                answer = {"choice": good_side if right else ("right" if good_side == "left" else "left")}
            elif view["kind"] == "binary":
                answer = {"label": "bad" if right else "good"}
            else:
                answer = {"rating": 3 if right else 9}
            assert api.submit(view["assignment_id"], token, answer).status_code == 201
            served += 1
        assert served == 4 if name == "careful" else served == 3, "3 gold tasks each; the k=1 regular task once"
    progress = api.client.get(f"/api/v1/campaigns/{c['id']}/progress", headers=api.admin()).json()
    stats = {a["name"]: a for a in progress["annotators"]}
    assert progress["gold_tasks"] == 3 and progress["tasks"] == 1 and progress["complete"] == 1
    assert stats["careful"]["gold_accuracy"] == 1.0 and stats["careful"]["gold_answered"] == 3
    assert stats["sloppy"]["gold_accuracy"] == 0.0 and stats["sloppy"]["gold_correct"] == 0
    aid = annotators["careful"][0]
    own = api.client.get(f"/api/v1/campaigns/{c['id']}/annotators/{aid}/progress", headers=api.as_(annotators["careful"][1]))
    assert own.status_code == 200 and own.json() == stats["careful"]
    export = api.client.get(f"/api/v1/campaigns/{c['id']}/export", headers=api.admin()).text.splitlines()
    assert len(export) == 1, "gold answers are not exported as training data"


def test_submission_is_idempotent(api: Any) -> None:
    c = api.campaign(samples=[{"prompt": "p", "response": "a"}, {"prompt": "p", "response": "b"}])
    _, token = api.invite("a", [c["id"]])
    aid = api.next(c["id"], token).json()["assignment_id"]
    first = api.submit(aid, token, {"choice": "left"}, key="retry-key-1", time_spent_ms=100)
    replay = api.submit(aid, token, {"choice": "left"}, key="retry-key-1", time_spent_ms=250)
    assert first.status_code == 201 and replay.status_code == 200
    assert replay.json()["replayed"] is True and replay.json()["annotation_id"] == first.json()["annotation_id"]
    assert api.submit(aid, token, {"choice": "right"}, key="retry-key-1").status_code == 409
    conflict = api.submit(aid, token, {"choice": "left"}, key="another-key")
    assert conflict.status_code == 409 and "already answered" in conflict.json()["detail"]
    assert _count(api, Annotation) == 1


def test_concurrent_double_submit_creates_one_row(api: Any) -> None:
    c = api.campaign(redundancy=1, samples=[{"prompt": "p", "response": "a"}, {"prompt": "p", "response": "b"}])
    _, token = api.invite("a", [c["id"]])
    aid = api.next(c["id"], token).json()["assignment_id"]
    key = uuid.uuid4().hex
    statuses: list[int] = []
    barrier = threading.Barrier(6)

    def click() -> None:
        barrier.wait()
        statuses.append(api.submit(aid, token, {"choice": "right"}, key=key).status_code)

    threads = [threading.Thread(target=click) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(statuses) == [200] * 5 + [201]
    assert _count(api, Annotation) == 1


def test_closed_campaign_refuses_next_and_submit(api: Any) -> None:
    c = api.campaign()
    _, token = api.invite("a", [c["id"]])
    aid = api.next(c["id"], token).json()["assignment_id"]
    closed = api.client.post(f"/api/v1/campaigns/{c['id']}/close", headers=api.admin())
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    assert api.next(c["id"], token).status_code == 409
    assert api.submit(aid, token, {"choice": "left"}).status_code == 409
    assert _count(api, Annotation) == 0


def test_members_listing_and_unknown_aggregate(api: Any) -> None:
    c1, c2 = api.campaign(name="one"), api.campaign(name="two")
    aid, token = api.invite("a", [c1["id"]])
    assert [c["name"] for c in api.client.get("/api/v1/campaigns", headers=api.as_(token)).json()] == ["one"]
    assert api.client.post(f"/api/v1/campaigns/{c2['id']}/members", json={"annotator_id": aid}, headers=api.admin()).status_code == 200
    assert [c["name"] for c in api.client.get("/api/v1/campaigns", headers=api.as_(token)).json()] == ["one", "two"]
    listed = api.client.get("/api/v1/annotators", headers=api.admin()).json()
    assert listed[0]["campaign_ids"] == [c1["id"], c2["id"]] and "token" not in listed[0]
    assert api.client.get("/api/v1/me", headers=api.as_(token)).json() == {"role": "annotator", "id": aid, "name": "a"}
    resp = api.client.get(f"/api/v1/campaigns/{c1['id']}/export?aggregate=median", headers=api.admin())
    assert resp.status_code == 422


def test_export_hook_calls_aggregation(api: Any) -> None:
    c = api.campaign(redundancy=3, samples=[{"prompt": "p", "response": "x"}, {"prompt": "p", "response": "y"}])
    for i, preferred in enumerate(["x", "x", "y"]):
        _, token = api.invite(f"a{i}", [c["id"]])
        view = api.next(c["id"], token).json()
        side = "left" if view["items"][0]["text"] == preferred else "right"
        assert api.submit(view["assignment_id"], token, {"choice": side}).status_code == 201
    raw = api.client.get(f"/api/v1/campaigns/{c['id']}/export?aggregate=none", headers=api.admin()).text.splitlines()
    majority = api.client.get(f"/api/v1/campaigns/{c['id']}/export?aggregate=majority", headers=api.admin())
    assert len(raw) == 3 and majority.status_code == 200
    records = [__import__("json").loads(line) for line in majority.text.splitlines()]
    assert len(records) == 1 and records[0]["chosen"] == "x" and records[0]["rejected"] == "y"


def test_web_forms_for_rating_and_ranking(sqlite_api: Any) -> None:
    """The form posts behind the task pages: bad input re-renders the task with the error, good input is stored."""
    import re

    from fastapi.testclient import TestClient

    samples = [{"prompt": "p", "response": t} for t in "abc"]
    rating = sqlite_api.campaign(kind="rating", scale=[0, 1], samples=samples[:1])
    ranking = sqlite_api.campaign(kind="ranking", rank_k=3, samples=samples)
    _, token = sqlite_api.invite("w", [rating["id"], ranking["id"]])
    web = TestClient(sqlite_api.client.app, base_url="http://testserver", follow_redirects=False)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', web.get("/login").text).group(1)
    web.post("/login", data={"token": token, "csrf_token": csrf})

    def form(cid: int) -> tuple[str, dict[str, str], list[str]]:
        page = web.get(f"/campaigns/{cid}/task").text
        fields = dict(re.findall(r'name="(csrf_token|idempotency_key)" value="([^"]+)"', page))
        action = re.search(r'action="(/assignments/\d+/answer)"', page).group(1)
        return action, fields, re.findall(r'name="item" value="(\d+)"', page)

    action, fields, _ = form(rating["id"])
    assert 'type="number" name="rating" min="0" max="1"' in web.get(f"/campaigns/{rating['id']}/task").text
    bad = web.post(action, data={**fields, "rating": "7"})
    assert bad.status_code == 422 and "outside the scale" in bad.text and 'id="answer-form"' in bad.text
    assert web.post(action, data={**fields, "rating": "0.25"}).status_code == 303
    action, fields, items = form(ranking["id"])
    dup = web.post(action, data={**fields, "item": items, "rank": ["1", "1", "2"]})
    assert dup.status_code == 422 and "different rank" in dup.text
    assert web.post(action, data={**fields, "item": items, "rank": ["2", "3", "1"]}).status_code == 303
    rows = sqlite_api.client.get(f"/api/v1/campaigns/{ranking['id']}/annotations", headers=sqlite_api.admin()).json()
    assert rows[0]["resolved"] == {"order": [int(items[2]), int(items[0]), int(items[1])]}
    rows = sqlite_api.client.get(f"/api/v1/campaigns/{rating['id']}/annotations", headers=sqlite_api.admin()).json()
    assert rows[0]["resolved"] == {"rating": 0.25}
