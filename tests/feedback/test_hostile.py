"""Hostile inputs: every case gets a clear 4xx naming the field, nothing stored changes, the server keeps answering.

Numbers that would overflow float32 training, ids beyond the database's integers, NUL bytes (which
PostgreSQL refuses), deep JSON and odd digits. The next/submit cases run through the fast path (the
token cached after a first call) and with it disabled (``token_cache_s = 0``: the FastAPI routes).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from sqlalchemy import func, select

from rlhfkit.feedback.models import Annotation, Annotator, Campaign, Sample

HUGE_ID = 2**63 + 5


def _counts(api: Any) -> tuple[int, ...]:
    with api.store.read_session() as s:
        return tuple(s.scalar(select(func.count()).select_from(m)) for m in (Annotation, Annotator, Campaign, Sample))


@pytest.fixture(params=["fast", "routes"])
def path_kind(request: pytest.FixtureRequest, api: Any) -> str:
    """Run a test through the fast ASGI path (tokens cached) and through the FastAPI routes (cache off)."""
    if request.param == "routes":
        api.client.app.state.tokens.ttl_s = 0
    return request.param


def _served(api: Any, **campaign: Any) -> tuple[dict[str, Any], str, dict[str, Any]]:
    c = api.campaign(**campaign)
    _, token = api.invite("hostile", [c["id"]])
    first = api.next(c["id"], token)
    assert first.status_code == 200, first.text
    again = api.next(c["id"], token)
    assert again.json()["assignment_id"] == first.json()["assignment_id"]
    return c, token, first.json()


def _raw_submit(api: Any, aid: int, token: str, text: str) -> Any:
    return api.client.post(f"/api/v1/assignments/{aid}/annotations", content=text.encode(),
                           headers={**api.as_(token), "Content-Type": "application/json"})


@pytest.mark.parametrize("margin", ["1e308", "Infinity", "-Infinity", "NaN", "1e7", "-1"])
def test_margin_that_would_not_survive_float32_is_refused(api: Any, path_kind: str, margin: str) -> None:
    c, token, view = _served(api)
    before = _counts(api)
    body = '{"idempotency_key": "k-hostile-1", "answer": {"choice": "left", "margin": %s}}' % margin
    resp = _raw_submit(api, view["assignment_id"], token, body)
    assert resp.status_code == 422, resp.text
    assert "margin" in resp.text
    assert _counts(api) == before
    ok = api.submit(view["assignment_id"], token, {"choice": "left", "margin": 2.5})
    assert ok.status_code == 201 and ok.json()["resolved"]["margin"] == 2.5


@pytest.mark.parametrize("rating", ["1e308", "Infinity", "NaN"])
def test_rating_must_be_finite(api: Any, path_kind: str, rating: str) -> None:
    _, token, view = _served(api, kind="rating")
    before = _counts(api)
    resp = _raw_submit(api, view["assignment_id"], token, '{"idempotency_key": "k-hostile-2", "answer": {"rating": %s}}' % rating)
    assert resp.status_code == 422 and "rating" in resp.text
    assert _counts(api) == before


@pytest.mark.parametrize("scale", [[1, 1e308], [float("-inf"), 5], [0, 1e7]])
def test_campaign_scale_must_be_finite_and_in_range(api: Any, scale: list[float]) -> None:
    before = _counts(api)
    body = json.dumps({"name": "x", "kind": "rating", "scale": scale, "samples": [{"prompt": "p", "response": "r"}]})
    resp = api.client.post("/api/v1/campaigns", content=body.encode(), headers={**api.admin(), "Content-Type": "application/json"})
    assert resp.status_code == 422 and "scale" in resp.text
    assert _counts(api) == before


def test_ids_beyond_the_database_integers_are_4xx(api: Any, path_kind: str) -> None:
    c, token, view = _served(api)
    for url in (f"/api/v1/campaigns/{HUGE_ID}", f"/api/v1/campaigns/{HUGE_ID}/progress",
                f"/api/v1/campaigns/{c['id']}/annotators/{HUGE_ID}/progress"):
        assert api.client.get(url, headers=api.admin()).status_code in (404, 422), url
    assert api.next(HUGE_ID, token).status_code in (404, 422)
    assert api.submit(HUGE_ID, token, {"choice": "left"}).status_code in (404, 422)
    assert api.client.post("/api/v1/annotators", json={"name": "n", "campaign_ids": [HUGE_ID]},
                           headers=api.admin()).status_code == 422
    assert api.client.post(f"/api/v1/campaigns/{c['id']}/members", json={"annotator_id": HUGE_ID},
                           headers=api.admin()).status_code == 422
    assert api.client.post(f"/api/v1/campaigns/{c['id']}/tasks", json={"tasks": [{"sample_ids": [1, HUGE_ID]}]},
                           headers=api.admin()).status_code == 422
    assert api.submit(view["assignment_id"], token, {"choice": "left"}).status_code == 201


def test_nul_bytes_are_refused_with_the_field_named(api: Any, path_kind: str) -> None:
    c, token, view = _served(api, allow_critique=True)
    before = _counts(api)
    resp = api.submit(view["assignment_id"], token, {"choice": "left"}, critique="bad\x00critique")
    assert resp.status_code == 422 and "critique" in resp.text
    resp = api.submit(view["assignment_id"], token, {"choice": "left"}, key="key\x00with-nul")
    assert resp.status_code == 422 and "idempotency_key" in resp.text
    resp = api.client.post("/api/v1/annotators", json={"name": "a\x00b", "campaign_ids": [c["id"]]}, headers=api.admin())
    assert resp.status_code == 422 and "name" in resp.text
    resp = api.client.post(f"/api/v1/campaigns/{c['id']}/samples",
                           json={"samples": [{"prompt": "p\x00", "response": "r"}]}, headers=api.admin())
    assert resp.status_code == 422 and "prompt" in resp.text
    assert _counts(api) == before
    assert api.submit(view["assignment_id"], token, {"choice": "left"}, critique="fine").status_code == 201


def test_deep_or_non_finite_sample_meta_is_refused(api: Any) -> None:
    c = api.campaign()
    deep: Any = 1
    for _ in range(600):
        deep = {"x": deep}
    for meta in (deep, {"score": float("nan")}):
        body = json.dumps({"samples": [{"prompt": "p", "response": "r", "meta": meta}]})
        resp = api.client.post(f"/api/v1/campaigns/{c['id']}/samples", content=body.encode(),
                               headers={**api.admin(), "Content-Type": "application/json"})
        assert resp.status_code == 422 and "meta" in resp.text
    assert api.client.get(f"/api/v1/campaigns/{c['id']}/samples", headers=api.admin()).status_code == 200


def test_web_ranking_form_with_superscript_digit_is_422(sqlite_api: Any) -> None:
    from fastapi.testclient import TestClient

    c = sqlite_api.campaign(kind="ranking", samples=[{"prompt": "p", "response": f"r{i}"} for i in range(3)])
    _, token = sqlite_api.invite("w", [c["id"]])
    client = TestClient(sqlite_api.client.app, base_url="http://testserver", follow_redirects=False)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"token": token, "csrf_token": csrf}).status_code == 303
    page = client.get(f"/campaigns/{c['id']}/task").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page).group(1)
    action = re.search(r'action="(/assignments/\d+/answer)"', page).group(1)
    items = re.findall(r'name="item" value="(\d+)"', page)
    form = {"csrf_token": csrf, "idempotency_key": key, "rank": ["²", "1", "3"], "item": items}
    resp = client.post(action, data=form)
    assert resp.status_code == 422 and "rank" in resp.text
    form["rating"] = "inf"
    assert client.post(f"/assignments/{HUGE_ID}/answer", data=form).status_code in (404, 422)


def test_after_hostile_inputs_the_export_is_clean_training_data(api: Any) -> None:
    from rlhfkit.data.preference_io import records_from_rows

    c, token, view = _served(api, kind="pairwise")
    for margin in ("1e308", "Infinity", "NaN"):
        body = '{"idempotency_key": "k-%s", "answer": {"choice": "left", "margin": %s}}' % (margin, margin)
        assert _raw_submit(api, view["assignment_id"], token, body).status_code == 422
    assert api.submit(view["assignment_id"], token, {"choice": "right", "margin": 3}).status_code == 201
    resp = api.client.get(f"/api/v1/campaigns/{c['id']}/export", headers=api.admin())
    assert resp.status_code == 200 and resp.headers["x-skipped-records"] == "0"
    rows = [json.loads(line, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name))) for line in resp.text.splitlines()]
    data = records_from_rows(rows)
    assert len(data.records) == 1 and data.report.dropped == 0 and data.records[0].margin == 3.0
