"""The fast ASGI path (api/hot.py) and the FastAPI routes give the same answers and store the same rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from rlhfkit.feedback.models import Annotation, Assignment
from rlhfkit.feedback.server.app import create_app
from rlhfkit.feedback.settings import FeedbackSettings

ADMIN = "admin-equivalence-token-0123456789"
VOLATILE = ("served_at", "submitted_at")


def _session(root: Path, token_cache_s: float) -> tuple[list[Any], list[tuple]]:
    settings = FeedbackSettings(state_dir=root / "state", db_url=f"sqlite:///{root / 'f.db'}", admin_token=ADMIN,
                                assignment_seed=7, token_cache_s=token_cache_s)
    app = create_app(settings)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    seen: list[Any] = []
    with TestClient(app) as client:
        samples = [{"prompt": f"p{p}", "response": f"r{p}.{r}"} for p in range(2) for r in range(3)]
        cid = client.post("/api/v1/campaigns", json={"name": "eq", "kind": "pairwise", "samples": samples,
                                                     "allow_critique": True}, headers=admin).json()["id"]
        token = client.post("/api/v1/annotators", json={"name": "a", "campaign_ids": [cid]}, headers=admin).json()["token"]
        me = {"Authorization": f"Bearer {token}"}
        for n in range(8):
            nxt = client.get(f"/api/v1/campaigns/{cid}/next", headers=me)
            body = nxt.json() if nxt.status_code == 200 else None
            seen.append((nxt.status_code, body and {k: v for k, v in body.items() if k not in VOLATILE}))
            if body is None:
                break
            aid = body["assignment_id"]
            answers = ['{"idempotency_key": "key-%04d", "answer": {"choice": "left", "margin": Infinity}}' % n,
                       '{"idempotency_key": "key-%04d", "answer": {"choice": ["left"]}}' % n,
                       '{"idempotency_key": "key-%04d", "answer": {"choice": "%s", "margin": %d}, "critique": "c%d"}'
                       % (n, "right" if n % 2 else "tie", n, n)]
            valid = ('{"idempotency_key": "key-%04d", "answer": {"choice": "left"}}' % n).encode()
            for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):  # not JSON: refused (422)
                headers = {**me, "Content-Type": content_type} if content_type else me
                resp = client.post(f"/api/v1/assignments/{aid}/annotations", content=valid, headers=headers)
                seen.append((resp.status_code, resp.json()))
            for text in answers:
                resp = client.post(f"/api/v1/assignments/{aid}/annotations", content=text.encode(),
                                   headers={**me, "Content-Type": "application/json"})
                out = resp.json()
                seen.append((resp.status_code, {k: v for k, v in out.items() if k not in VOLATILE}))
            replay = client.post(f"/api/v1/assignments/{aid}/annotations", headers=me,
                                 json={"idempotency_key": f"key-{n:04d}", "answer": {"choice": "right" if n % 2 else "tie", "margin": n},
                                       "critique": f"c{n}"})
            seen.append((replay.status_code, replay.json()["replayed"]))
        with app.state.store.read_session() as s:
            rows = [(a.id, a.assignment_id, a.task_id, a.answer, a.resolved, a.critique, a.source, a.is_skip)
                    for a in s.scalars(select(Annotation).order_by(Annotation.id))]
            rows += [(a.id, a.task_id, tuple(a.displayed), a.status) for a in s.scalars(select(Assignment).order_by(Assignment.id))]
    return seen, rows


def test_fast_path_and_routes_agree(tmp_path: Path) -> None:
    fast = _session(tmp_path / "fast", token_cache_s=60)
    routes = _session(tmp_path / "routes", token_cache_s=0)
    assert fast == routes
    assert [code for code, _ in fast[0]].count(201) == 6 and fast[0][-1][0] == 204
    assert [code for code, _ in fast[0]].count(422) >= 3 * 6, "a body not declared as JSON is refused on both paths"
