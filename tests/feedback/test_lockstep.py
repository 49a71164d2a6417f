"""PostgreSQL: a batch of API operations runs in lockstep (one round trip per step for the whole batch)
with the answers it would get in sequence, and falls back to one savepoint per operation on a database error."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from conftest import new_postgres_database
from sqlalchemy import func, insert, select

from rlhfkit.feedback import crud
from rlhfkit.feedback.models import Annotation, Annotator, utcnow
from rlhfkit.feedback.rawsql import Statement
from rlhfkit.feedback.serving import AnnotationService
from rlhfkit.feedback.steps import Query, StepOp
from rlhfkit.feedback.store import open_store

pytestmark = pytest.mark.postgres


def _held(store: Any) -> tuple[threading.Event, Any]:
    """Hold the writer busy so that what is queued next forms one batch; returns (gate, its future)."""
    started, gate = threading.Event(), threading.Event()
    future = store.writer.submit(lambda tx: started.set() or gate.wait(10))
    assert started.wait(10)
    return gate, future


def test_a_batch_runs_in_lockstep_with_the_answers_of_a_sequence(postgres_server: str) -> None:
    store = open_store(new_postgres_database(postgres_server))
    try:
        specs = [crud.SampleSpec(prompt=f"p{i}", response=f"r{j}") for i in range(4) for j in range(2)]
        with store.session() as s:
            cid = crud.create_campaign(s, name="c", kind="pairwise", redundancy=1, gold_rate=0.0, samples=specs).id
            a1, a2, a3 = (crud.create_annotator(s, name=n, campaign_ids=[cid])[0].id for n in ("a1", "a2", "a3"))
        service = AnnotationService(store)

        def nxt(aid: int) -> StepOp[Any]:
            return StepOp(lambda tx: service._next(tx, cid, aid), aid)

        gate, held = _held(store)
        futures = [store.writer.submit(nxt(a)) for a in (a1, a2, a3, a1)]  # a1 twice: a double click
        gate.set()
        held.result(timeout=10)
        views = [f.result(timeout=30) for f in futures]
        assert store.writer.lockstep_batches == 1
        assert views[0]["assignment_id"] == views[3]["assignment_id"], "a1's second request got its open assignment"
        assert len({v["task_id"] for v in views[:3]}) == 3, "redundancy 1: three annotators, three tasks"

        key = uuid.uuid4().hex
        gate, held = _held(store)
        ops = [service._submit_op(views[0]["assignment_id"], a1, key, {"choice": "left"}, None, None, "api"),
               service._submit_op(views[0]["assignment_id"], a1, key, {"choice": "left"}, None, None, "api"),
               service._submit_op(views[1]["assignment_id"], a2, uuid.uuid4().hex, {"choice": "up"}, None, None, "api"),
               service._submit_op(views[2]["assignment_id"], a3, uuid.uuid4().hex, {"choice": "skip"}, None, None, "api")]
        futures = [store.writer.submit(op) for op in ops]
        gate.set()
        held.result(timeout=10)
        first, replay = futures[0].result(timeout=30), futures[1].result(timeout=30)
        assert store.writer.lockstep_batches == 2
        assert (first[1], replay[1]) == (False, True) and first[0]["annotation_id"] == replay[0]["annotation_id"]
        with pytest.raises(crud.InvalidError):
            futures[2].result(timeout=30)
        assert futures[3].result(timeout=30)[0]["resolved"]["skip"] is True
        with store.read_session() as s:
            assert s.scalar(select(func.count()).select_from(Annotation)) == 2
    finally:
        store.close()


def test_a_database_error_in_lockstep_reruns_the_batch_in_sequence(postgres_server: str) -> None:
    store = open_store(new_postgres_database(postgres_server))
    try:
        table = Annotator.__table__
        add = Statement(insert(table).values(name="x", token_hash="same-hash", active=True, created_at=utcnow())
                        .returning(table.c.id), store.engine.dialect)

        def adding(tx: Any) -> Any:
            row = yield Query(add, writes=True)
            return row[0]

        gate, held = _held(store)
        futures = [store.writer.submit(StepOp(adding, key)) for key in (1, 2)]  # the second breaks the unique hash
        gate.set()
        held.result(timeout=10)
        assert isinstance(futures[0].result(timeout=30), int)
        with pytest.raises(Exception, match="(?i)unique|duplicate"):
            futures[1].result(timeout=30)
        assert store.writer.lockstep_batches == 0, "abandoned, then run one savepoint at a time"
        with store.read_session() as s:
            assert s.scalar(select(func.count()).select_from(Annotator)) == 1
    finally:
        store.close()
