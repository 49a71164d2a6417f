"""Group-committed writes: idempotency enforced by the database under real concurrency, savepoint
isolation of one failing operation, the in-memory task pool's rules, and writes made on raw
statements reading back through the ORM exactly as ORM writes do.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN_TOKEN
from sqlalchemy import func, insert, select

from rlhfkit.feedback import crud
from rlhfkit.feedback.models import Annotation, Annotator
from rlhfkit.feedback.pool import TaskPool
from rlhfkit.feedback.serving import AnnotationService
from rlhfkit.feedback.steps import StepOp
from rlhfkit.feedback.store import open_store

PAIR = [{"prompt": "p", "response": "a"}, {"prompt": "p", "response": "b"}]


def _campaign(store: Any, n_prompts: int = 1, redundancy: int = 1) -> tuple[int, int]:
    """A pairwise campaign and one member annotator; returns (campaign id, annotator id)."""
    specs = [crud.SampleSpec(prompt=f"p{i}", response=f"r{j}") for i in range(n_prompts) for j in range(2)]
    with store.session() as s:
        campaign = crud.create_campaign(s, name="c", kind="pairwise", redundancy=redundancy, gold_rate=0.0, samples=specs)
        annotator, _ = crud.create_annotator(s, name="a", campaign_ids=[campaign.id])
        return campaign.id, annotator.id


def _rows(store: Any) -> int:
    with store.read_session() as s:
        return s.scalar(select(func.count()).select_from(Annotation))


def test_concurrent_same_key_through_the_writer_stores_one_row_with_one_answer(db_url: str) -> None:
    store = open_store(db_url)
    try:
        service = AnnotationService(store)
        cid, aid = _campaign(store)
        view = service.next_blocking(campaign_id=cid, annotator_id=aid, timeout_s=30)
        key, barrier = uuid.uuid4().hex, threading.Barrier(8)

        def submit() -> tuple[dict[str, Any], bool]:
            barrier.wait()
            return service.submit_blocking(assignment_id=view["assignment_id"], annotator_id=aid, idempotency_key=key,
                                           answer={"choice": "left"})

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: submit(), range(8)))
        assert sorted(replayed for _, replayed in results) == [False] + [True] * 7
        assert len({r["annotation_id"] for r, _ in results}) == 1
        assert all(r["resolved"] == results[0][0]["resolved"] for r, _ in results)
        assert _rows(store) == 1
        with store.read_session() as s:
            stored = s.scalars(select(Annotation)).one()
            assert stored.submitted_at.utcoffset().total_seconds() == 0, "raw-statement writes read back as aware UTC"
            assert stored.answer == {"choice": "left"} and stored.assignment.status == "answered"
    finally:
        store.close()


def test_concurrent_same_key_against_the_live_server(live_server: Any) -> None:
    admin = httpx.Client(base_url=f"{live_server.url}/api/v1", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    cid = admin.post("/campaigns", json={"name": "c", "kind": "pairwise", "samples": PAIR}).json()["id"]
    token = admin.post("/annotators", json={"name": "a", "campaign_ids": [cid]}).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    aid = httpx.get(f"{live_server.url}/api/v1/campaigns/{cid}/next", headers=headers).json()["assignment_id"]
    body, barrier = {"idempotency_key": uuid.uuid4().hex, "answer": {"choice": "right"}}, threading.Barrier(10)

    def click() -> httpx.Response:
        with httpx.Client(headers=headers, timeout=30) as client:
            barrier.wait()
            return client.post(f"{live_server.url}/api/v1/assignments/{aid}/annotations", json=body)

    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(lambda _: click(), range(10)))
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
    answers = [r.json() for r in responses]
    assert len({(a["annotation_id"], a["submitted_at"], str(a["resolved"])) for a in answers}) == 1
    assert _rows(live_server.store) == 1
    admin.close()


def test_one_failing_operation_rolls_back_only_its_own_writes(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'f.db'}")
    table = Annotator.__table__
    try:
        started, gate = threading.Event(), threading.Event()
        first = store.writer.submit(lambda tx: started.set() or gate.wait(10))  # holds the writer...
        assert started.wait(10)  # ...so that the next three are queued together and share one batch

        def add(name: str, fail: bool = False) -> Any:
            def op(tx: Any) -> str:
                tx.cursor.execute(*_insert(store, table, name))
                if fail:
                    raise crud.InvalidError(f"{name} refused after writing")
                return name
            return op

        futures = [store.writer.submit(add("one")), store.writer.submit(add("bad", fail=True)),
                   store.writer.submit(add("two"))]
        gate.set()
        first.result(timeout=10)
        assert futures[0].result(timeout=10) == "one" and futures[2].result(timeout=10) == "two"
        with pytest.raises(crud.InvalidError, match="bad refused"):
            futures[1].result(timeout=10)
        assert store.writer.batches == 2, "the three operations were committed as one batch"
        with store.read_session() as s:
            assert sorted(s.scalars(select(Annotator.name))) == ["one", "two"]
    finally:
        store.close()


def _insert(store: Any, table: Any, name: str) -> tuple[str, Any]:
    """Raw SQL and parameters inserting one annotator row (as a writer operation would)."""
    from rlhfkit.feedback.rawsql import Statement
    from rlhfkit.feedback.models import utcnow

    statement = Statement(insert(table).values(name=name, token_hash=uuid.uuid4().hex, active=True, created_at=utcnow()),
                          store.engine.dialect)
    return statement.sql, statement.params({})


def test_writer_answers_after_restart_of_the_store(tmp_path: Path) -> None:
    """Assignments are committed before they are served: a new process (store) sees the same open one."""
    url = f"sqlite:///{tmp_path / 'f.db'}"
    store = open_store(url)
    cid, aid = _campaign(store, n_prompts=3)
    view = AnnotationService(store).next_blocking(campaign_id=cid, annotator_id=aid, timeout_s=30)
    store.close()
    again = open_store(url)
    try:
        service = AnnotationService(again)
        assert service.next_blocking(campaign_id=cid, annotator_id=aid, timeout_s=30)["assignment_id"] == view["assignment_id"]
    finally:
        again.close()


def test_pool_prefers_fullest_unserved_tasks_and_mixes_gold_at_its_rate() -> None:
    pool = TaskPool(redundancy=3, gold_rate=0.25, tasks=[(1, False), (2, False), (3, False), (9, True)], taken={2: 2, 3: 3})
    rng = random.Random(0)
    assert pool.open_slots == 2, "task 3 is full"
    firsts = Counter(next(pool.candidates(annotator_id=7, rng=rng)) for _ in range(2000))
    assert set(firsts) == {2, 9} and 0.2 < firsts[9] / 2000 < 0.3
    pool.record(2, annotator_id=7)
    assert pool.count[2] == 3 and pool.open_slots == 1
    assert list(pool.candidates(annotator_id=7, rng=random.Random(1)))[0] in (1, 9)
    pool.release(2)
    assert 2 not in pool.candidates(annotator_id=7, rng=rng), "never the same task twice for one annotator"
    assert next(pool.candidates(annotator_id=8, rng=random.Random(5))) in (2, 9)


def test_pool_is_checked_against_the_database(tmp_path: Path) -> None:
    """A stale pool (another process filled the task) never over-assigns: the database count decides."""
    store = open_store(f"sqlite:///{tmp_path / 'f.db'}")
    try:
        cid, aid = _campaign(store, n_prompts=1)
        with store.session() as s:
            other, _ = crud.create_annotator(s, name="b", campaign_ids=[cid])
            other_id = other.id
        service = AnnotationService(store)
        store.writer.submit(StepOp(lambda tx: service._pool(tx, cid, 1, 0.0), aid)).result(timeout=10)  # built while empty
        with store.session() as s:  # the only task is taken behind the pool's back (the web pages' ORM path)
            campaign = crud.get_campaign_for(s, campaign_id=cid, principal=crud.Principal(role="admin"))
            assert crud.next_assignment(s, campaign=campaign, annotator_id=other_id) is not None
        assert service.next_blocking(campaign_id=cid, annotator_id=aid, timeout_s=10) is None
    finally:
        store.close()


def test_writer_refuses_to_write_into_a_deleted_database_file(tmp_path: Path) -> None:
    from rlhfkit.feedback.store import DatabaseMissingError

    path = tmp_path / "f.db"
    store = open_store(f"sqlite:///{path}")
    try:
        assert store.writer.submit(lambda tx: 1).result(timeout=10) == 1
        path.unlink()
        with pytest.raises(DatabaseMissingError, match="is gone"):
            store.writer.submit(lambda tx: 2).result(timeout=10)
    finally:
        store.close()
