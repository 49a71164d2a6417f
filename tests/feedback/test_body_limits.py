"""Body-size limits: refused with 413 while streaming, for annotators at the small limit; the admin's
uploads get the larger one and are refused whole, never truncated."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from rlhfkit.feedback.models import Annotation, Campaign
from rlhfkit.feedback.server.app import create_app
from rlhfkit.feedback.settings import FeedbackSettings

ADMIN = "admin-limits-token-0123456789abcdef"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def small(tmp_path: Path) -> Iterator[TestClient]:
    settings = FeedbackSettings(state_dir=tmp_path / "state", db_url=f"sqlite:///{tmp_path / 'f.db'}", admin_token=ADMIN,
                                max_body_bytes=64 * 1024, max_upload_bytes=1 << 20)
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


def _count(client: TestClient, model: Any) -> int:
    with client.app.state.store.read_session() as s:
        return s.scalar(select(func.count()).select_from(model))


def _chunks(data: bytes, size: int = 16 * 1024) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_annotator_bodies_over_the_limit_are_413(small: TestClient) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    c = small.post("/api/v1/campaigns", json={"name": "c", "kind": "pairwise", "allow_critique": True,
                                              "samples": [{"prompt": "p", "response": f"r{i}"} for i in range(2)]}, headers=admin).json()
    token = small.post("/api/v1/annotators", json={"name": "a", "campaign_ids": [c["id"]]}, headers=admin).json()["token"]
    me = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    view = small.get(f"/api/v1/campaigns/{c['id']}/next", headers=me).json()
    big = json.dumps({"idempotency_key": "k" * 10, "answer": {"choice": "left"}, "critique": "x" * (2 << 20)}).encode()
    url = f"/api/v1/assignments/{view['assignment_id']}/annotations"
    assert small.post(url, content=big, headers=me).status_code == 413
    assert small.post(url, content=_chunks(big), headers=me).status_code == 413  # streamed, no Content-Length
    assert small.post("/api/v1/campaigns", content=big, headers=me).status_code == 413  # an admin route, annotator token
    assert _count(small, Annotation) == 0
    ok = small.post(url, json={"idempotency_key": "k" * 10, "answer": {"choice": "left"}}, headers=me)
    assert ok.status_code == 201


def test_admin_upload_over_the_limit_is_refused_whole(small: TestClient) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    samples = [{"prompt": f"p{i // 2}", "response": f"r{i}" + "y" * 20_000} for i in range(60)]  # ~1.2 MB
    body = {"name": "big", "kind": "pairwise", "samples": samples}
    assert small.post("/api/v1/campaigns", json=body, headers=admin).status_code == 413
    body["samples"] = samples[:20]  # ~0.4 MB: over the plain limit, under the admin's upload limit
    assert small.post("/api/v1/campaigns", json=body, headers=admin).status_code == 201
    csrf = CSRF.search(small.get("/login").text).group(1)
    assert small.post("/login", data={"token": ADMIN, "csrf_token": csrf}).status_code == 303
    csrf = CSRF.search(small.get("/admin").text).group(1)
    upload = "".join(json.dumps(s) + "\n" for s in samples).encode()
    resp = small.post("/admin/campaigns", data={"name": "web", "kind": "pairwise", "csrf_token": csrf},
                      files={"samples": ("s.jsonl", upload, "application/jsonl")})
    assert resp.status_code == 413 and "1048576" in resp.text
    assert _count(small, Campaign) == 1
